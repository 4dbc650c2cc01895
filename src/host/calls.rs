//! Outside calls: the core's [`OutboundCall`] to `dispatch_http_call`, and
//! the host's answer back to a [`CallResponse`].

use std::time::Duration;

use proxy_wasm::types::{BufferType, MapType};

use super::abi;
use crate::oidc::MAX_ANSWER_BYTES;
use crate::outbound::{CallResponse, OutboundCall};
use crate::untrusted_url::is_safe_header_value;

/// Starts the call; `None` if Envoy refused it (e.g. the cluster is not defined).
///
/// This goes through the proxy-wasm crate's `dispatch_http_call`, not our own
/// ABI wrapper, because the crate's dispatcher must record which context made
/// the call to deliver the answer there (it panics on an unknown token). Envoy
/// answers a refused call with BadArgument or InternalFailure, which the
/// crate returns as errors.
pub fn dispatch(call: &OutboundCall) -> Option<u32> {
    if let Some((name, _)) = call
        .headers
        .iter()
        .find(|(n, v)| !is_safe_header_value(n) || !is_safe_header_value(v))
    {
        log::error!("refused a call whose header {name:?} contains CR, LF or NUL");
        return None;
    }
    let headers: Vec<(&str, &str)> = call
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let body = (!call.body.is_empty()).then_some(call.body.as_slice());
    let timeout = Duration::from_millis(call.timeout_ms);
    match proxy_wasm::hostcalls::dispatch_http_call(
        &call.cluster,
        headers,
        body,
        Vec::new(),
        timeout,
    ) {
        Ok(token) => Some(token),
        Err(status) => {
            log::warn!(
                "Envoy refused a call through cluster {:?} ({status:?}; is the cluster defined?)",
                call.cluster
            );
            None
        }
    }
}

/// Reads the answer in `on_http_call_response`. Envoy reports a failed call
/// (timeout, reset, no healthy host) with no headers: status 0.
pub fn answer(num_headers: usize, body_size: usize) -> CallResponse {
    if num_headers == 0 {
        return CallResponse::failed();
    }
    let headers = abi::headers(MapType::HttpCallResponseHeaders)
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let body = if body_size > MAX_ANSWER_BYTES {
        // Larger than any answer the core accepts: it refuses it by size.
        vec![0u8; MAX_ANSWER_BYTES + 1]
    } else {
        abi::buffer(BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default()
    };
    CallResponse::from_parts(headers, body)
}
