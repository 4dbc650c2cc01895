//! The root context: reads and compiles the plugin configuration, makes a
//! context for each HTTP request, and runs what must outlive requests: the
//! maintenance tick and every upstream token refresh (a refresh started by a
//! request that then gives up is still carried through and stored).

use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use super::random::HostRandom;
use super::shared_data::SharedData;
use super::store_steps::{self, Pending, Ran, StepFn};
use super::waiters::{self, Waiters};
use super::{abi, calls, http::Request, logger};
use crate::config::Config;
use crate::flow::{self, Event, Filter, RefreshJob, Step};
use crate::maintenance::{self, Purpose};
use crate::outbound::{CallResponse, OutboundCall};

/// Largest plugin configuration read (a guard against a runaway config source).
const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

#[derive(Default)]
pub struct Root {
    filter: Option<Rc<Filter>>,
    /// Calls in flight, by call token.
    calls: HashMap<u32, Call>,
    /// Requests of this VM waiting for an upstream token refresh.
    waiters: Waiters,
    /// When maintenance last ran (the tick runs faster while requests wait).
    last_maintenance: u64,
    /// This root context's id, to make it effective again after waking requests.
    context_id: u32,
    /// Fast ticks since parked requests last looked at an etcd store.
    ticks_since_wake: u32,
}

/// What a root context's call is for.
enum Call {
    Maintenance(Purpose),
    Refresh(Box<RefreshJob>),
    /// A step waiting for the store (etcd).
    Store(Box<Task>),
}

/// A root step waiting for the store, by what it was doing.
enum Task {
    RefreshAnswer(Pending<Option<RefreshJob>>),
    Proactive(Pending<Option<RefreshJob>>),
    MaintenanceAnswer(Pending<Option<(Purpose, OutboundCall)>>),
    Tick(Pending<Vec<(Purpose, OutboundCall)>>),
    /// Whether a parked request's wait is over.
    Wake(u32, Pending<Step>),
}

/// With etcd, parked requests look every this many fast ticks (each look
/// is an etcd read per request).
const ETCD_WAKE_EVERY_TICKS: u32 = 10;

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            ..Root::default()
        }
    }

    /// Runs a step on the store; `None` if it waits (it goes on in
    /// [`Root::store_answered`]) or produced nothing usable.
    fn run<T>(
        &mut self,
        fresh: bool,
        step: StepFn<T>,
        wrap: impl FnOnce(Pending<T>) -> Task,
    ) -> Option<T> {
        let filter = self.filter.clone()?;
        match store_steps::start(&filter, fresh, step) {
            Ran::Done(out) => HostRandom::healthy().then_some(out),
            Ran::Waiting(pending) => {
                self.calls
                    .insert(pending.token, Call::Store(Box::new(wrap(pending))));
                None
            }
        }
    }

    fn resumed<T>(
        &mut self,
        pending: Pending<T>,
        answer: &CallResponse,
        wrap: impl FnOnce(Pending<T>) -> Task,
    ) -> Option<T> {
        let filter = self.filter.clone()?;
        match store_steps::resume(&filter, pending, answer) {
            Ran::Done(out) => HostRandom::healthy().then_some(out),
            Ran::Waiting(pending) => {
                self.calls
                    .insert(pending.token, Call::Store(Box::new(wrap(pending))));
                None
            }
        }
    }

    fn store_answered(&mut self, task: Task, answer: &CallResponse) {
        match task {
            Task::RefreshAnswer(p) => {
                if let Some(out) = self.resumed(p, answer, Task::RefreshAnswer) {
                    self.after_refresh(out);
                }
            }
            Task::Proactive(p) => {
                if let Some(Some(job)) = self.resumed(p, answer, Task::Proactive) {
                    self.start_refresh(job);
                }
            }
            Task::MaintenanceAnswer(p) => {
                if let Some(Some((next, call))) = self.resumed(p, answer, Task::MaintenanceAnswer) {
                    self.start(next, &call);
                }
            }
            Task::Tick(p) => {
                for (purpose, call) in self.resumed(p, answer, Task::Tick).unwrap_or_default() {
                    self.start(purpose, &call);
                }
            }
            Task::Wake(id, p) => {
                if let Some(step) = self.resumed(p, answer, |p| Task::Wake(id, p)) {
                    waiters::woken(&self.waiters, id, step, self.context_id);
                }
            }
        }
    }

    fn start(&mut self, purpose: Purpose, call: &OutboundCall) {
        if let Some(token) = calls::dispatch(call) {
            self.calls.insert(token, Call::Maintenance(purpose));
        }
    }

    /// Starts a refresh; one Envoy refuses outright is answered as failed,
    /// so its lock is released and the waiting requests are told.
    fn start_refresh(&mut self, job: RefreshJob) {
        match calls::dispatch(&job.call) {
            Some(token) => {
                self.calls.insert(token, Call::Refresh(Box::new(job)));
            }
            None => self.refresh_answered(job, &CallResponse::failed()),
        }
    }

    fn refresh_answered(&mut self, job: RefreshJob, answer: &CallResponse) {
        let answer = answer.clone();
        let out = self.run(
            false,
            Box::new(move |ctx| flow::refresh_answer(ctx, job.clone(), &answer)),
            Task::RefreshAnswer,
        );
        if let Some(out) = out {
            self.after_refresh(out);
        }
    }

    fn after_refresh(&mut self, retry: Option<RefreshJob>) {
        if let Some(retry) = retry {
            self.start_refresh(retry);
            return;
        }
        // This VM's waiters need not wait for a tick.
        self.wake_parked();
    }

    /// Every parked request looks whether its wait is over. With etcd each
    /// look reads etcd itself (the refresh may have finished at another
    /// replica), one at a time per request.
    fn wake_parked(&mut self) {
        let looking: Vec<u32> = self
            .calls
            .values()
            .filter_map(|c| match c {
                Call::Store(task) => match **task {
                    Task::Wake(id, _) => Some(id),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        for (id, stage) in waiters::parked(&self.waiters) {
            if looking.contains(&id) {
                continue;
            }
            let step = self.run(
                true,
                Box::new(move |ctx| flow::handle(ctx, &stage, &Event::Wake)),
                |p| Task::Wake(id, p),
            );
            if let Some(step) = step {
                waiters::woken(&self.waiters, id, step, self.context_id);
            }
        }
    }

    fn start_queued_refreshes(&mut self) {
        let queued = self.waiters.borrow_mut().take_refreshes();
        for job in queued {
            self.start_refresh(job);
        }
    }

    /// Tokens in use that expire before the next tick are refreshed now,
    /// off the request path.
    fn refresh_tokens_in_use(&mut self) {
        let in_use = self.waiters.borrow_mut().in_use(abi::now_seconds());
        for (route, sub) in in_use {
            let job = self.run(
                false,
                Box::new(move |ctx| flow::proactive_refresh(ctx, &route, &sub)),
                Task::Proactive,
            );
            if let Some(Some(job)) = job {
                self.start_refresh(job);
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(call) = self.calls.remove(&token_id) else {
            return;
        };
        let answer = calls::answer(num_headers, body_size);
        match call {
            Call::Maintenance(purpose) => {
                let out = self.run(
                    false,
                    Box::new(move |ctx| maintenance::on_answer(ctx, purpose, &answer)),
                    Task::MaintenanceAnswer,
                );
                if let Some(Some((next, call))) = out {
                    self.start(next, &call);
                }
            }
            Call::Refresh(job) => self.refresh_answered(*job, &answer),
            Call::Store(task) => self.store_answered(*task, &answer),
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        logger::follow_host_level();
        if !HostRandom::probe() {
            log::error!(
                "invalid configuration: (host): the host's random_get fails; tokens can't be made safely"
            );
            return false;
        }
        let size = plugin_configuration_size.min(MAX_CONFIG_BYTES);
        let Some(bytes) = abi::buffer(BufferType::PluginConfiguration, 0, size) else {
            log::error!(
                "invalid configuration: (root): the host did not hand over the plugin configuration"
            );
            return false;
        };
        if plugin_configuration_size > MAX_CONFIG_BYTES {
            log::error!("invalid configuration: (root): larger than {MAX_CONFIG_BYTES} bytes");
            return false;
        }
        match Config::parse(&bytes) {
            Ok(config) => {
                // Plaintext and verified-token caches belong to the old keys.
                crate::store::clear_cache();
                store_steps::reset();
                crate::oauth::access_token::clear_cache();
                log::info!(
                    "configured {} route(s): {}",
                    config.routes.len(),
                    config
                        .routes
                        .iter()
                        .map(|r| r.resource.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.filter = Some(Rc::new(Filter::new(config)));
                if !abi::set_tick_period_ms(maintenance::TICK_SECONDS * 1000) {
                    log::warn!(
                        "could not set the maintenance tick; expired entries will not be pruned"
                    );
                }
                true
            }
            Err(errors) => {
                // One line per problem, each naming its field; the old
                // configuration (if any) stays in force.
                for e in &errors {
                    log::error!("invalid configuration: {e}");
                }
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.start_queued_refreshes();
        let etcd = self.filter.as_ref().is_some_and(|f| f.etcd.is_some());
        self.ticks_since_wake += 1;
        if !etcd || self.ticks_since_wake >= ETCD_WAKE_EVERY_TICKS {
            self.ticks_since_wake = 0;
            self.wake_parked();
        }
        if !self.waiters.borrow().is_waiting() {
            let _ = abi::set_tick_period_ms(maintenance::TICK_SECONDS * 1000);
        }
        let now = abi::now_seconds();
        if now < self.last_maintenance + maintenance::TICK_SECONDS {
            return;
        }
        self.last_maintenance = now;
        self.refresh_tokens_in_use();
        let maintaining = self.calls.values().any(|c| match c {
            Call::Maintenance(_) => true,
            Call::Store(task) => matches!(**task, Task::MaintenanceAnswer(_) | Task::Tick(_)),
            Call::Refresh(_) => false,
        });
        if maintaining {
            return;
        }
        // Shared data never shrinks: expired entries are emptied (with
        // etcd, that is its read cache's entries; etcd's own expire with leases).
        if let Some(filter) = &self.filter {
            let keys = &filter.config.keys.encryption;
            match crate::store::prune(
                &mut SharedData,
                filter.store_prefix(),
                keys,
                now,
                maintenance::PRUNE_PER_TICK,
            ) {
                Ok(0) => {}
                Ok(n) => log::debug!("pruned {n} expired store entries"),
                Err(e) => log::warn!("pruning the store failed: {e}"),
            }
        }
        let calls = self
            .run(false, Box::new(maintenance::tick), Task::Tick)
            .unwrap_or_default();
        for (purpose, call) in calls {
            self.start(purpose, &call);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request::new(
            context_id,
            self.filter.clone(),
            self.waiters.clone(),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
