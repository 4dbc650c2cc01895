//! The default store: proxy-wasm shared data, one map shared by every
//! worker's VM in one Envoy (same `vm_id`). Our own extern declarations,
//! as in `abi.rs`: the proxy-wasm crate's `get_shared_data` and
//! `set_shared_data` panic on any status they don't expect, and a panic
//! kills the VM.

use std::ptr::{null, null_mut};

use super::abi::take_host_buffer;
use super::random::HostRandom;
use crate::env::Random;
use crate::flow::{Ctx, Filter};
use crate::store::{Kv, StoreError};

// proxy-wasm ABI 0.2.1 status codes.
const STATUS_OK: u32 = 0;
const STATUS_NOT_FOUND: u32 = 1;
const STATUS_CAS_MISMATCH: u32 = 8;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    #[link_name = "proxy_get_shared_data"]
    fn host_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    #[link_name = "proxy_set_shared_data"]
    fn host_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
}

/// [`Kv`] over Envoy shared data, whose rules the trait states: Envoy's
/// `SharedData::set` (proxy-wasm-cpp-host) is where they come from.
#[derive(Debug, Clone, Copy, Default)]
pub struct SharedData;

impl Kv for SharedData {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        let mut data = null_mut();
        let mut size = 0usize;
        let mut cas = 0u32;
        // SAFETY: `key` is borrowed for the call; the out-pointers outlive it.
        let status = unsafe {
            host_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
        };
        match status {
            // SAFETY: on success `data`/`size` describe a host allocation
            // made through `proxy_on_memory_allocate` (null when empty).
            STATUS_OK => Ok(Some((unsafe { take_host_buffer(data, size) }, cas))),
            STATUS_NOT_FOUND => Ok(None),
            other => Err(StoreError::Unavailable(format!(
                "proxy_get_shared_data returned status {other}"
            ))),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        // Fail closed: after a failed fill the core may hold predictable
        // bytes (see host/random.rs); none of them may reach the store.
        if !HostRandom::healthy() {
            return Err(StoreError::Unavailable(
                "host randomness failed; store writes refused".into(),
            ));
        }
        // An empty value is passed as null, as abi.rs does for empty bodies.
        let value_data = if value.is_empty() {
            null()
        } else {
            value.as_ptr()
        };
        // SAFETY: pointers and lengths describe `key` and `value`, borrowed for the call.
        let status =
            unsafe { host_set_shared_data(key.as_ptr(), key.len(), value_data, value.len(), cas) };
        match status {
            STATUS_OK => Ok(()),
            STATUS_CAS_MISMATCH => Err(StoreError::CasMismatch),
            other => Err(StoreError::Unavailable(format!(
                "proxy_set_shared_data returned status {other}"
            ))),
        }
    }
}

/// Runs a core step on shared data with the host's clock and randomness:
/// its reads answered at once, its writes committed when it is done (see
/// `store::shared::run`).
pub fn run_step<T>(filter: &Filter, mut step: impl FnMut(&mut Ctx<'_>) -> T) -> T {
    let mut random = HostRandom;
    let now = super::abi::now_seconds();
    let mut notes = Vec::new();
    let out = crate::store::shared::run(&mut SharedData, filter.store_prefix(), |view| {
        let mut ctx = Ctx {
            filter,
            now,
            random: &mut random as &mut dyn Random,
            kv: view,
            notes: Vec::new(),
        };
        let out = step(&mut ctx);
        // Only the last run's lines: a run the store turned down never happened.
        notes = ctx.notes;
        out
    });
    super::executor::write_notes(notes);
    out
}
