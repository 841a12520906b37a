//! Logging set-up. Log lines carry ids (organization, message, delivery), counts and
//! statuses: never names, phone numbers, addresses or bodies.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Whether `log.level` is a filter we can apply: a level (`info`), or comma-separated
/// `EnvFilter` directives (`info,switchboard::queue=debug`). A bare word that is not a level
/// is refused: `EnvFilter` would read it as a target name and silence the log.
pub fn check_level(level: &str) -> Result<(), String> {
    for directive in level.split(',').map(str::trim) {
        if directive.is_empty() {
            return Err(format!("{level:?} has an empty directive"));
        }
        let bare = !directive.contains(['=', '[', ':']);
        if bare && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{directive:?} is not a level (trace, debug, info, warn, error, off) nor a \
                 `target=level` directive"
            ));
        }
    }
    EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| format!("{level:?} is not a filter directive: {e}"))
}

pub fn init(config: &LogConfig) {
    init_with_writer(config, std::io::stderr);
}

/// [`init`], writing through `writer` (the command line's writer lifts a progress bar while a
/// line is written).
pub fn init_with_writer<W>(config: &LogConfig, writer: W)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // sqlx logs statements at info (with bound values at debug); keep it quiet by default.
    let filter = filter.add_directive("sqlx=warn".parse().expect("static directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let _ = if config.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
