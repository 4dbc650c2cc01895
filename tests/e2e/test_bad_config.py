"""A plugin configuration the filter refuses stops Envoy at start-up.

Measured with Envoy 1.40 (V8): when the plugin's proxy_on_configure returns
false, Envoy logs "Wasm VM failed Failed to configure base Wasm plugin",
"Plugin configured to fail closed failed to load" and "error `Unable to create
Wasm plugin <name>` initializing config", then exits with status 1 within a
second or so; it never reports ready. `envoy --mode validate` fails the same
way, since it also loads the module and runs on_configure.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.envoy import (
    PLUGIN_NAME,
    invalid_configuration_messages,
    panic_lines,
    plugin_config,
    random_key,
    exit_or_ready,
    start_envoy,
    summary,
)
from harness.procs import free_port

EXIT_TIMEOUT_S = 20.0
Mutation = Callable[[dict[str, Any]], None]


def from_without_scheme(c: dict[str, Any]) -> None:
    c["routes"][0]["from"] = c["routes"][0]["from"].removeprefix("http://")


def from_not_http(c: dict[str, Any]) -> None:
    c["routes"][0]["from"] = "ftp://127.0.0.1:21"


def from_relative(c: dict[str, Any]) -> None:
    c["routes"][0]["from"] = "/mcp"


def missing_encryption_keys(c: dict[str, Any]) -> None:
    del c["keys"]["encryption"]


def short_encryption_key(c: dict[str, Any]) -> None:
    c["keys"]["encryption"][0]["key"] = random_key(16)


def unknown_route_field(c: dict[str, Any]) -> None:
    route = c["routes"][0]
    route["frm"] = route.pop("from")


def duplicate_route(c: dict[str, Any]) -> None:
    c["routes"].append(copy.deepcopy(c["routes"][0]))


# (mutation, the field path the message must start with, a word it must contain)
CASES = [
    (from_without_scheme, "routes[0].from", None),
    (from_not_http, "routes[0].from", None),
    (from_relative, "routes[0].from", None),
    # serde reports a missing field at its parent ("keys: missing field `encryption`")
    # or at the field itself ("keys.encryption: ..."): either names it.
    (missing_encryption_keys, "keys", "encryption"),
    (short_encryption_key, "keys.encryption[0].key", None),
    # deny_unknown_fields: "routes[0]: unknown field `frm`" or "routes[0].frm: ...".
    (unknown_route_field, "routes[0]", "frm"),
    (duplicate_route, "routes[1]", "duplicate"),
]


@pytest.mark.parametrize(("mutate", "path", "word"), CASES, ids=[c[0].__name__ for c in CASES])
def test_envoy_refuses_bad_configuration(tmp_path: Path, mutate: Mutation, path: str, word: str | None) -> None:
    listen_port = free_port()
    config = plugin_config(listen_port)
    mutate(config)
    envoy = start_envoy(tmp_path, mcp_port=free_port(), plugin=config, listen_port=listen_port, wait=False)
    try:
        outcome, status = exit_or_ready(envoy, EXIT_TIMEOUT_S)
        log = envoy.log()
    finally:
        envoy.stop()
    details = summary(log)
    assert outcome != "ready", f"Envoy accepted the bad configuration and got ready:\n{details}"
    assert outcome == "exited", f"Envoy neither exited nor got ready in {EXIT_TIMEOUT_S:.0f}s:\n{details}"
    assert status != 0, f"Envoy exited 0 with a bad configuration:\n{details}"
    assert f"Unable to create Wasm plugin {PLUGIN_NAME}" in log, details
    assert not panic_lines(log), f"the filter must refuse, not panic:\n{details}"

    messages = [m for m in invalid_configuration_messages(log) if m.startswith(path)]
    assert messages, f"no 'invalid configuration: {path}...' line in the log:\n{details}"
    if word is not None:
        assert any(word in m.lower() for m in messages), f"no message at {path} mentions {word!r}: {messages}"


def test_valid_configuration_logs_no_complaint(envoy) -> None:
    """The session's Envoy (valid configuration) started without any such line."""
    assert not invalid_configuration_messages(envoy.log()), envoy.proc.tail()
