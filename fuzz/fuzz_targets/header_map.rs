//! The proxy-wasm header-map wire format (`host::map_codec::decode`), as the
//! host hands it to the filter, then the request head built from it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oauth_filter::flow::RequestHead;
use mcp_oauth_filter::host::map_codec;

fuzz_target!(|data: &[u8]| {
    if let Some(map) = map_codec::decode(data) {
        let pairs = map.len();
        let head = RequestHead::from_pairs(map);
        assert_eq!(head.headers.len(), pairs);
        for name in [
            "authorization",
            "cookie",
            "content-type",
            "origin",
            "mcp-protocol-version",
        ] {
            let _ = head.header(name);
            let _ = head.header_count(name);
        }
    }
});
