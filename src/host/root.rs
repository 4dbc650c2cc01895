//! The root context: reads and compiles the plugin configuration, makes a
//! context for each HTTP request, and runs what must outlive requests: the
//! maintenance tick and every upstream token refresh (a refresh started by a
//! request that then gives up is still carried through and stored).

use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use super::random::HostRandom;
use super::shared_data::{SharedData, run_step};
use super::waiters::{self, Waiters};
use super::{abi, calls, http::Request, logger};
use crate::config::Config;
use crate::flow::{self, Ctx, Filter, RefreshJob};
use crate::maintenance::{self, Purpose};
use crate::outbound::OutboundCall;

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
}

/// What a root context's call is for.
enum Call {
    Maintenance(Purpose),
    Refresh(Box<RefreshJob>),
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            ..Root::default()
        }
    }

    /// Runs a maintenance step with the host's clock, randomness and store.
    fn with_ctx<T>(&self, run: impl FnMut(&mut Ctx<'_>) -> T) -> Option<T> {
        let filter = self.filter.as_ref()?;
        let out = run_step(filter, run);
        // Nothing made from failed randomness may be acted on.
        HostRandom::healthy().then_some(out)
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
            None => self.refresh_answered(job, &crate::outbound::CallResponse::failed()),
        }
    }

    fn refresh_answered(&mut self, job: RefreshJob, answer: &crate::outbound::CallResponse) {
        if let Some(Some(retry)) =
            self.with_ctx(|ctx| flow::refresh_answer(ctx, job.clone(), answer))
        {
            self.start_refresh(retry);
            return;
        }
        // This VM's waiters need not wait for a tick.
        if let Some(filter) = self.filter.clone() {
            waiters::wake(&filter, &self.waiters, self.context_id);
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
            if let Some(Some(job)) = self.with_ctx(|ctx| flow::proactive_refresh(ctx, &route, &sub))
            {
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
                if let Some(Some((next, call))) =
                    self.with_ctx(|ctx| maintenance::on_answer(ctx, purpose, &answer))
                {
                    self.start(next, &call);
                }
            }
            Call::Refresh(job) => self.refresh_answered(*job, &answer),
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
        if let Some(filter) = self.filter.clone() {
            waiters::wake(&filter, &self.waiters, self.context_id);
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
        let maintaining = self
            .calls
            .values()
            .any(|c| matches!(c, Call::Maintenance(_)));
        if maintaining {
            return;
        }
        if let Some(filter) = &self.filter
            && matches!(filter.config.store, crate::config::Store::SharedData { .. })
        {
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
        for (purpose, call) in self.with_ctx(maintenance::tick).unwrap_or_default() {
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
