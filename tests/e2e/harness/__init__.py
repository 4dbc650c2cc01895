"""Test harness for the end-to-end tests: real Envoy, real MCP server, real clients."""
