//! Process logs through `tracing`: JSON lines (one object per event, fields
//! flattened) or pretty text, to stderr. The filter comes from `MESH_LOG`,
//! else the config's `log.level`; the format from the command line, else
//! `MESH_LOG_FORMAT`, else the config.

use mesh_api::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; call once, before anything logs.
pub fn init(format: LogFormat, level: &str) {
    let filter = std::env::var("MESH_LOG")
        .ok()
        .and_then(|env| EnvFilter::try_new(env).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// The format named by `MESH_LOG_FORMAT`, if any.
pub fn format_from_env() -> Option<LogFormat> {
    match std::env::var("MESH_LOG_FORMAT").ok()?.as_str() {
        "json" => Some(LogFormat::Json),
        "pretty" => Some(LogFormat::Pretty),
        _ => None,
    }
}
