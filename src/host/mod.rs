//! The only code that talks to proxy-wasm: it reads what the host offers,
//! hands it to the pure core, and carries out the commands the core returns.

pub mod map_codec;

#[cfg(all(target_arch = "wasm32", not(test)))]
mod abi;
#[cfg(all(target_arch = "wasm32", not(test)))]
mod calls;
#[cfg(all(target_arch = "wasm32", not(test)))]
mod executor;
#[cfg(all(target_arch = "wasm32", not(test)))]
mod http;
#[cfg(all(target_arch = "wasm32", not(test)))]
mod logger;
#[cfg(all(target_arch = "wasm32", not(test)))]
mod random;
#[cfg(all(target_arch = "wasm32", not(test)))]
mod root;
#[cfg(all(target_arch = "wasm32", not(test)))]
mod shared_data;
#[cfg(all(target_arch = "wasm32", not(test)))]
mod store_steps;
#[cfg(all(target_arch = "wasm32", not(test)))]
mod waiters;

// The module's entry point: Envoy calls `_initialize` once per VM.
#[cfg(all(target_arch = "wasm32", not(test)))]
proxy_wasm::main! {{
    logger::install();
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::new(context_id))
    });
}}
