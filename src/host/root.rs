//! The root context: reads and compiles the plugin configuration, and makes
//! a context for each HTTP request.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use super::{abi, http::Request, logger};
use crate::config::Config;
use crate::flow::Filter;

/// Largest plugin configuration read (a guard against a runaway config source).
const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

#[derive(Default)]
pub struct Root {
    filter: Option<Rc<Filter>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        logger::follow_host_level();
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

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request::new(self.filter.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
