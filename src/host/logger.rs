//! `log` records to the host's log, without the proxy-wasm crate's logger,
//! which panics if the host refuses a line.

use proxy_wasm::types::LogLevel;

use super::abi;

struct HostLogger;

static LOGGER: HostLogger = HostLogger;

pub fn install() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Follows the host's level, so debug lines are not even formatted unless wanted.
pub fn follow_host_level() {
    let filter = match abi::log_level() {
        Some(LogLevel::Trace) => log::LevelFilter::Trace,
        Some(LogLevel::Debug) => log::LevelFilter::Debug,
        Some(LogLevel::Info) | None => log::LevelFilter::Info,
        Some(LogLevel::Warn) => log::LevelFilter::Warn,
        Some(LogLevel::Error) => log::LevelFilter::Error,
        Some(LogLevel::Critical) => log::LevelFilter::Error,
    };
    log::set_max_level(filter);
}

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        abi::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}
