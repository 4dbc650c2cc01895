//! Outside calls: the core's [`OutboundCall`] to `dispatch_http_call`, and
//! the host's answer back to a [`CallResponse`].

use proxy_wasm::types::{BufferType, MapType};

use super::abi;
use crate::oidc::MAX_ANSWER_BYTES;
use crate::outbound::{CallResponse, OutboundCall};

/// Starts the call; `None` if Envoy refused it (e.g. the cluster is not defined).
pub fn dispatch(call: &OutboundCall) -> Option<u32> {
    let headers: Vec<(&str, &str)> = call
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let timeout = u32::try_from(call.timeout_ms).unwrap_or(u32::MAX);
    let token = abi::http_call(&call.cluster, &headers, &call.body, timeout);
    if token.is_none() {
        log::warn!(
            "Envoy refused a call through cluster {:?} (is the cluster defined?)",
            call.cluster
        );
    }
    token
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
