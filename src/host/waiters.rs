//! Requests parked while the upstream token they need is refreshed, the
//! refreshes waiting for the root context to start them, and the upstream
//! tokens in use (for the tick's proactive refresh). Each VM keeps its own;
//! a VM learns that a refresh finished (in any worker) by looking at the
//! store: right away when the refresh ran in the same VM, else on its root
//! context's tick, which runs every [`FAST_TICK_MS`] while anything waits.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::types::MapType;

use super::abi;
use super::random::HostRandom;
use crate::flow::{Effect, Next, RefreshJob, Stage, Step};

/// Tick period while requests wait.
pub const FAST_TICK_MS: u64 = 20;

#[derive(Default)]
pub struct Registry {
    /// Parked requests by HTTP context id.
    parked: HashMap<u32, Stage>,
    /// Requests woken by someone else, with their new stage, for the HTTP
    /// context to pick up (it needs the stage for its response).
    woken: HashMap<u32, Stage>,
    /// Refreshes for the root context to start (only it outlives requests).
    refreshes: Vec<RefreshJob>,
    /// Upstream tokens forwarded lately: (route, user) to when, in seconds.
    in_use: HashMap<(String, String), u64>,
}

/// How long a token counts as in use after a request carried it.
pub const IN_USE_SECONDS: u64 = 600;

pub type Waiters = Rc<RefCell<Registry>>;

impl Registry {
    pub fn park(&mut self, context_id: u32, stage: Stage) {
        self.parked.insert(context_id, stage);
    }

    pub fn is_waiting(&self) -> bool {
        !self.parked.is_empty() || !self.refreshes.is_empty()
    }

    pub fn queue_refresh(&mut self, job: RefreshJob) {
        self.refreshes.push(job);
    }

    pub fn take_refreshes(&mut self) -> Vec<RefreshJob> {
        std::mem::take(&mut self.refreshes)
    }

    pub fn used(&mut self, route: &str, sub: &str, now: u64) {
        self.in_use
            .insert((route.to_string(), sub.to_string()), now);
    }

    /// The tokens used within [`IN_USE_SECONDS`]; older ones are forgotten.
    pub fn in_use(&mut self, now: u64) -> Vec<(String, String)> {
        self.in_use
            .retain(|_, at| now.saturating_sub(*at) < IN_USE_SECONDS);
        self.in_use.keys().cloned().collect()
    }

    /// The stage another context gave this one, if it was woken.
    pub fn take_woken(&mut self, context_id: u32) -> Option<Stage> {
        self.woken.remove(&context_id)
    }

    /// The request is gone (done or reset): forget it.
    pub fn forget(&mut self, context_id: u32) {
        self.parked.remove(&context_id);
        self.woken.remove(&context_id);
    }
}

/// The parked requests, with their stages.
pub fn parked(waiters: &Waiters) -> Vec<(u32, Stage)> {
    waiters
        .borrow()
        .parked
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect()
}

/// A parked request's wait is over (`step`): it is answered or resumed.
/// `current`: the context whose callback is running, made effective again
/// afterwards.
pub fn woken(waiters: &Waiters, id: u32, step: Step, current: u32) {
    if !waiters.borrow().parked.contains_key(&id) {
        // Answered already, or gone.
        return;
    }
    if !abi::set_effective_context(id) {
        // The request went away meanwhile.
        waiters.borrow_mut().forget(id);
        let _ = abi::set_effective_context(current);
        return;
    }
    let mut ok = HostRandom::healthy();
    for effect in &step.effects {
        ok = ok
            && match effect {
                Effect::SendReply(r) => {
                    let headers: Vec<(&str, &str)> = r
                        .headers
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect();
                    abi::send_local_response(r.status, &headers, &r.body)
                }
                Effect::SetRequestHeader(n, v) => {
                    abi::replace_header(MapType::HttpRequestHeaders, n, v)
                }
                Effect::RemoveRequestHeader(n) => {
                    abi::remove_header(MapType::HttpRequestHeaders, n)
                }
                // A woken request never refreshes or changes a response.
                Effect::SetResponseHeader(..) | Effect::Dispatch(_) | Effect::StartRefresh(_) => {
                    false
                }
            };
    }
    let mut registry = waiters.borrow_mut();
    registry.parked.remove(&id);
    if !ok {
        abi::send_local_response(
            500,
            &[("content-type", "application/json"), ("cache-control", "no-store")],
            br#"{"error":"server_error","error_description":"the authorization filter could not resume this request"}"#,
        );
        registry.woken.insert(id, Stage::Answered);
    } else {
        registry.woken.insert(id, step.stage);
        if step.next == Next::Continue && !abi::resume_request() {
            log::warn!("could not resume a request woken after an upstream token refresh");
        }
    }
    drop(registry);
    let _ = abi::set_effective_context(current);
}
