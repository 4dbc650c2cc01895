//! Requests parked while the upstream token they need is refreshed, the
//! refreshes waiting for the root context to start them, and the upstream
//! tokens in use (for the tick's proactive refresh). Each VM keeps its own;
//! a VM learns that a refresh finished (in any worker) by looking at the
//! store: right away when the refresh ran in the same VM, else on its root
//! context's tick, which runs every [`FAST_TICK_MS`] while anything waits.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::abi;
use super::executor::{self, Carried, Role};
use crate::flow::{Next, RefreshJob, Stage, Step};

/// Tick period while requests wait.
pub const FAST_TICK_MS: u64 = 20;

/// One request's machine state. The HTTP context owns it; while the
/// request is parked the registry holds it too, so that the root context
/// can move it on when the wait is over.
pub type Machine = Rc<RefCell<Stage>>;

#[derive(Default)]
pub struct Registry {
    /// Parked requests by HTTP context id.
    parked: HashMap<u32, Machine>,
    /// Refreshes for the root context to start (only it outlives requests).
    refreshes: Vec<RefreshJob>,
    /// Upstream tokens forwarded lately: (route, user) to when, in seconds.
    in_use: HashMap<(String, String), u64>,
}

/// How long a token counts as in use after a request carried it.
pub const IN_USE_SECONDS: u64 = 600;

pub type Waiters = Rc<RefCell<Registry>>;

impl Registry {
    pub fn park(&mut self, context_id: u32, machine: Machine) {
        self.parked.insert(context_id, machine);
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

    pub fn used(&mut self, route: String, sub: String, now: u64) {
        self.in_use.insert((route, sub), now);
    }

    /// The tokens used within [`IN_USE_SECONDS`]; older ones are forgotten.
    pub fn in_use(&mut self, now: u64) -> Vec<(String, String)> {
        self.in_use
            .retain(|_, at| now.saturating_sub(*at) < IN_USE_SECONDS);
        self.in_use.keys().cloned().collect()
    }

    /// The request is gone (done or reset): forget it.
    pub fn forget(&mut self, context_id: u32) {
        self.parked.remove(&context_id);
    }
}

/// The parked requests, with their stages.
pub fn parked(waiters: &Waiters) -> Vec<(u32, Stage)> {
    waiters
        .borrow()
        .parked
        .iter()
        .map(|(k, m)| (*k, m.borrow().clone()))
        .collect()
}

/// A parked request looked again (`step`, the machine's answer to a
/// wake-up). If its wait is over, it is answered or resumed. `current`:
/// the context whose callback is running, made effective again afterwards.
pub fn woken(waiters: &Waiters, id: u32, step: Step, current: u32) {
    if matches!(step.stage, Stage::Parked { .. }) {
        // Still waiting.
        return;
    }
    let Some(machine) = waiters.borrow_mut().parked.remove(&id) else {
        // Answered already, or gone.
        return;
    };
    if !abi::set_effective_context(id) {
        // The request went away meanwhile.
        let _ = abi::set_effective_context(current);
        return;
    }
    let carried = executor::carry_out(step.commands, waiters, Role::Woken);
    if carried == Carried::Done {
        *machine.borrow_mut() = step.stage;
        if step.next == Next::Continue && !abi::resume_request() {
            log::warn!("could not resume a request woken after an upstream token refresh");
        }
    } else {
        *machine.borrow_mut() = Stage::Answered;
        executor::fail_closed("could not resume a woken request");
    }
    let _ = abi::set_effective_context(current);
}
