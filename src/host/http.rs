//! The HTTP context: feeds request events to the core's state machine and
//! carries out the effects it returns.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use super::abi;
use crate::flow::{self, Effect, Filter, Next, RequestHead, Stage};

pub struct Request {
    filter: Option<Rc<Filter>>,
    stage: Stage,
}

impl Request {
    pub fn new(filter: Option<Rc<Filter>>) -> Self {
        Request {
            filter,
            stage: Stage::Start,
        }
    }

    /// Carries out effects in order. If a header can't be changed, the
    /// request is answered with an error rather than forwarded half-done.
    fn apply(&mut self, effects: Vec<Effect>) -> bool {
        for effect in effects {
            let ok = match &effect {
                Effect::SendReply(reply) => {
                    let headers: Vec<(&str, &str)> = reply
                        .headers
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect();
                    abi::send_local_response(reply.status, &headers, &reply.body)
                }
                Effect::RemoveRequestHeader(name) => {
                    abi::remove_header(MapType::HttpRequestHeaders, name)
                }
                Effect::SetRequestHeader(name, value) => {
                    abi::replace_header(MapType::HttpRequestHeaders, name, value)
                }
                Effect::SetResponseHeader(name, value) => {
                    abi::replace_header(MapType::HttpResponseHeaders, name, value)
                }
            };
            if !ok {
                log::error!("host refused an effect: {}", effect_name(&effect));
                return false;
            }
        }
        true
    }

    fn fail_closed(&mut self, why: &str) -> Action {
        log::error!("{why}; answering 500");
        self.stage = Stage::Answered;
        let body = br#"{"error":"server_error","error_description":"the authorization filter could not process this request"}"#;
        abi::send_local_response(
            500,
            &[
                ("content-type", "application/json"),
                ("cache-control", "no-store"),
            ],
            body,
        );
        Action::Pause
    }
}

fn effect_name(effect: &Effect) -> &'static str {
    match effect {
        Effect::SendReply(_) => "send reply",
        Effect::RemoveRequestHeader(_) => "remove request header",
        Effect::SetRequestHeader(..) => "set request header",
        Effect::SetResponseHeader(..) => "set response header",
    }
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(filter) = self.filter.clone() else {
            return self.fail_closed("no valid configuration");
        };
        let Some(pairs) = abi::headers(MapType::HttpRequestHeaders) else {
            return self.fail_closed("could not read the request headers");
        };
        let head = RequestHead::from_pairs(pairs);
        let step = flow::on_request_headers(&filter, &head);
        self.stage = step.stage;
        if !self.apply(step.effects) {
            return self.fail_closed("could not carry out the request decision");
        }
        match step.next {
            Next::Continue => Action::Continue,
            Next::Stop => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if !matches!(self.stage, Stage::Forwarded { .. }) {
            return Action::Continue;
        }
        let has_allow_origin = abi::headers(MapType::HttpResponseHeaders)
            .map(|h| h.iter().any(|(n, _)| n == "access-control-allow-origin"))
            .unwrap_or(false);
        let effects = flow::on_response_headers(&self.stage, has_allow_origin);
        // Response header changes are best effort: a refusal must not break the response.
        let _ = self.apply(effects);
        Action::Continue
    }
}
