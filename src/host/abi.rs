//! Thin, non-panicking wrappers over the proxy-wasm host calls this filter
//! uses. The proxy-wasm crate's own wrappers panic on any unexpected status
//! (a header set after the headers went on, a non-UTF-8 header value), and a
//! panic kills the VM: every later request would then fail. These return the
//! status instead, so the caller can answer the request cleanly.

use std::ptr::{null, null_mut};

use proxy_wasm::types::{BufferType, LogLevel, MapType};

use super::map_codec;

const STATUS_OK: u32 = 0;
const STATUS_NOT_FOUND: u32 = 1;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    #[link_name = "proxy_log"]
    fn host_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    #[link_name = "proxy_get_log_level"]
    fn host_get_log_level(return_level: *mut u32) -> u32;
    #[link_name = "proxy_get_buffer_bytes"]
    fn host_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    #[link_name = "proxy_get_property"]
    fn host_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    #[link_name = "proxy_get_header_map_pairs"]
    fn host_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    #[link_name = "proxy_replace_header_map_value"]
    fn host_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    #[link_name = "proxy_remove_header_map_value"]
    fn host_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    #[link_name = "proxy_get_current_time_nanoseconds"]
    fn host_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    #[link_name = "proxy_set_tick_period_milliseconds"]
    fn host_set_tick_period_milliseconds(period: u32) -> u32;
    #[link_name = "proxy_set_buffer_bytes"]
    fn host_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_size: usize,
    ) -> u32;
    #[link_name = "proxy_set_effective_context"]
    fn host_set_effective_context(context_id: u32) -> u32;
    #[link_name = "proxy_continue_stream"]
    fn host_continue_stream(stream_type: u32) -> u32;
    #[link_name = "proxy_send_local_response"]
    fn host_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

/// Takes ownership of a buffer the host allocated through the module's
/// `proxy_on_memory_allocate` (the proxy-wasm crate's allocator).
///
/// # Safety
/// `data` must be null or a host-returned allocation of exactly `size` bytes.
pub(super) unsafe fn take_host_buffer(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        // SAFETY: the allocator hands out `Vec<u8>` allocations of `size` bytes.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }
}

pub fn log(level: LogLevel, message: &str) {
    // SAFETY: pointer and length describe `message`, borrowed for the call.
    let _ = unsafe { host_log(level as u32, message.as_ptr(), message.len()) };
}

pub fn log_level() -> Option<LogLevel> {
    let mut level = 0u32;
    // SAFETY: `level` outlives the call.
    if unsafe { host_get_log_level(&mut level) } != STATUS_OK {
        return None;
    }
    Some(match level {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        _ => LogLevel::Critical,
    })
}

pub fn buffer(buffer_type: BufferType, start: usize, max_size: usize) -> Option<Vec<u8>> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: out-pointers outlive the call; the host allocates the result.
    match unsafe {
        host_get_buffer_bytes(buffer_type as u32, start, max_size, &mut data, &mut size)
    } {
        // SAFETY: on success `data`/`size` describe a host allocation.
        STATUS_OK => Some(unsafe { take_host_buffer(data, size) }),
        STATUS_NOT_FOUND => Some(Vec::new()),
        _ => None,
    }
}

pub fn headers(map_type: MapType) -> Option<Vec<(String, Vec<u8>)>> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: out-pointers outlive the call.
    if unsafe { host_get_header_map_pairs(map_type as u32, &mut data, &mut size) } != STATUS_OK {
        return None;
    }
    // SAFETY: on success `data`/`size` describe a host allocation.
    map_codec::decode(&unsafe { take_host_buffer(data, size) })
}

/// The last line against header injection: whatever the core decided, no
/// name or value with CR, LF or NUL is handed to Envoy (RFC 9110 5.5).
fn header_is_safe(name: &str, value: &str) -> bool {
    let safe = crate::untrusted_url::is_safe_header_value(name)
        && crate::untrusted_url::is_safe_header_value(value);
    if !safe {
        log::error!("refused to write header {name:?}: its value contains CR, LF or NUL");
    }
    safe
}

/// A host property such as `source.address` (segments joined by NUL, as the
/// ABI wants); `None` when absent or unreadable.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    let joined = path.join("\0");
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: `joined` is borrowed for the call; on success the host hands
    // over an allocation that take_host_buffer frees.
    unsafe {
        if host_get_property(joined.as_ptr(), joined.len(), &mut data, &mut size) != STATUS_OK {
            return None;
        }
        Some(take_host_buffer(data, size))
    }
}

pub fn replace_header(map_type: MapType, name: &str, value: &str) -> bool {
    if !header_is_safe(name, value) {
        return false;
    }
    // SAFETY: pointers and lengths describe borrowed strings for the call.
    unsafe {
        host_replace_header_map_value(
            map_type as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        ) == STATUS_OK
    }
}

pub fn remove_header(map_type: MapType, name: &str) -> bool {
    // SAFETY: pointer and length describe `name` for the call.
    unsafe { host_remove_header_map_value(map_type as u32, name.as_ptr(), name.len()) == STATUS_OK }
}

pub fn send_local_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> bool {
    if !headers.iter().all(|(n, v)| header_is_safe(n, v)) {
        return false;
    }
    let encoded = map_codec::encode(headers);
    // SAFETY: every pointer/length pair describes a live borrowed buffer.
    unsafe {
        host_send_local_response(
            status,
            null(),
            0,
            if body.is_empty() {
                null()
            } else {
                body.as_ptr()
            },
            body.len(),
            encoded.as_ptr(),
            encoded.len(),
            -1,
        ) == STATUS_OK
    }
}

/// Unix time in seconds, from the host's clock.
pub fn now_seconds() -> u64 {
    let mut nanos = 0u64;
    // SAFETY: `nanos` outlives the call.
    if unsafe { host_get_current_time_nanoseconds(&mut nanos) } != STATUS_OK {
        return 0;
    }
    nanos / 1_000_000_000
}

/// Lets a paused request go on (proxy-wasm `StreamType::HttpRequest` = 0).
pub fn resume_request() -> bool {
    // SAFETY: no pointers.
    unsafe { host_continue_stream(0) == STATUS_OK }
}

/// Lets a paused response go on (`StreamType::HttpResponse` = 1).
pub fn resume_response() -> bool {
    // SAFETY: no pointers.
    unsafe { host_continue_stream(1) == STATUS_OK }
}

/// Asks the host to call the root context's `on_tick` every `period_ms`.
pub fn set_tick_period_ms(period_ms: u64) -> bool {
    let period = u32::try_from(period_ms).unwrap_or(u32::MAX);
    // SAFETY: no pointers.
    unsafe { host_set_tick_period_milliseconds(period) == STATUS_OK }
}

/// Makes `context_id` the target of the following host calls (to act on a
/// parked request from another context's callback).
pub fn set_effective_context(context_id: u32) -> bool {
    // SAFETY: no pointers.
    unsafe { host_set_effective_context(context_id) == STATUS_OK }
}

/// Replaces `size` bytes from `start` of a buffer (a response body) with `data`.
pub fn set_buffer(buffer_type: BufferType, start: usize, size: usize, data: &[u8]) -> bool {
    // SAFETY: pointer and length describe `data`, borrowed for the call.
    unsafe {
        host_set_buffer_bytes(buffer_type as u32, start, size, data.as_ptr(), data.len())
            == STATUS_OK
    }
}
