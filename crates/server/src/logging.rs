//! Where the binary's log lines and notices go, so that writing them can never stop the server.
//!
//! Log lines are handed to a background writer thread (`tracing-appender`'s non-blocking writer,
//! lossy: when stderr is slow or gone, lines are dropped, never waited for) and write errors are
//! not reported back through `eprintln!`, which panics on a closed stderr. Notices meant for the
//! operator (the first-start admin token banner) use [`notice`], which ignores a failed write
//! and, with `CUSTODY_LOG_FORMAT=json`, is a JSON event like every other line.

use crate::config::{Config, LogFormat};
use std::io::Write as _;
use tracing_subscriber::EnvFilter;

/// Keeps the background log writer alive; dropping it flushes what is queued.
#[derive(Debug)]
pub struct LogGuard {
    _worker: tracing_appender::non_blocking::WorkerGuard,
}

/// Installs the global subscriber for `config` (`CUSTODY_LOG`, `CUSTODY_LOG_FORMAT`), writing to
/// stderr through a non-blocking, lossy writer.
pub fn init(config: &Config) -> LogGuard {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, worker) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("custody-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).log_internal_errors(false);
    // A second initialisation (tests that start the binary's code twice) keeps the first.
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    LogGuard { _worker: worker }
}

/// Tells the operator something on stderr: plain text, or with JSON logs one JSON object with
/// `level`, `message` and the given fields. A write that fails (stderr closed) is ignored.
pub fn notice(format: LogFormat, text: &str, fields: &[(&str, &str)]) {
    let line = match format {
        LogFormat::Pretty => format!("{text}\n"),
        LogFormat::Json => {
            let mut event = serde_json::Map::new();
            event.insert("level".into(), "INFO".into());
            event.insert("message".into(), text.into());
            for (name, value) in fields {
                event.insert((*name).into(), (*value).into());
            }
            format!("{}\n", serde_json::Value::Object(event))
        }
    };
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(line.as_bytes());
    let _ = stderr.flush();
}
