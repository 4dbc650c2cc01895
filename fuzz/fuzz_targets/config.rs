//! The plugin configuration reader (`Config::parse`): whatever Envoy hands
//! the filter at start-up or on an update. No input may panic; a refusal
//! must name at least one problem.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oauth_filter::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Err(problems) = Config::parse(data) {
        assert!(
            !problems.is_empty(),
            "a refused configuration names no problem"
        );
    }
});
