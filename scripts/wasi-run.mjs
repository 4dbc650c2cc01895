// Runs a wasm32-wasip1 test binary (cargo's runner) under Node's WASI, so the
// core's unit and flow tests also run compiled to wasm: 32-bit usize, wasm's
// allocator and integer semantics, as in Envoy's V8.
// proxy-wasm host functions ("env" imports) are stubbed to trap: the core
// never calls the host, so a test that reaches one fails loudly.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import { argv, env, exit } from 'node:process';

process.removeAllListeners('warning'); // WASI is "experimental" in Node 20
const [wasmPath, ...args] = argv.slice(2);
const wasi = new WASI({ version: 'preview1', args: [wasmPath, ...args], env, preopens: { '/': '/' }, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(wasmPath));
const imports = { wasi_snapshot_preview1: wasi.wasiImport };
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.module === 'wasi_snapshot_preview1' || imp.kind !== 'function') continue;
  imports[imp.module] ??= {};
  imports[imp.module][imp.name] = () => { throw new Error(`host call ${imp.module}.${imp.name} reached in a test`); };
}
const instance = await WebAssembly.instantiate(module, imports);
// A test binary has `_start`; hide a reactor `_initialize` if one is linked in.
const { _initialize, ...exports } = instance.exports;
exit(wasi.start({ exports }));
