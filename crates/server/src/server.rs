//! The HTTP server: accepts connections up to a cap (more are answered 503 and closed), applies
//! the header-read timeout, tags every request with an id and a tracing span, logs one line per
//! request, records metrics, and shuts down gracefully.

use crate::bootstrap::{self, Secrets};
use crate::config::Config;
use crate::json::{BodyBudget, BodyLimits};
use crate::routes::Router;
use crate::state::{AppState, StartError};
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::Instrument as _;

/// A server running in this process.
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub local_addr: SocketAddr,
    /// The public base URL the server advertises.
    pub public_url: String,
    /// The shared state, for in-process inspection by tests and embedders.
    pub state: Arc<AppState>,
    /// Set when this start generated the admin token (printed once by the binary).
    pub generated_admin_token: Option<std::path::PathBuf>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Held while the server runs (SQLite: one serving process per database file).
    _database_lock: bootstrap::DatabaseLock,
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish (up to 10 s), and waits.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the server stops (after [`RunningServer::trigger_shutdown`] or a signal).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A handle that can ask the server to stop.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Binds, builds the state (database, migrations, keys) and starts serving in the background.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    start_with_clock(config, Arc::new(crate::state::SystemClock)).await
}

/// As [`start`], with the clock the server reads "now" from (tests move theirs forward).
pub async fn start_with_clock(
    config: Config,
    clock: Arc<dyn custody_identity::ports::Clock>,
) -> Result<RunningServer, StartError> {
    let random = custody_providers::OsRandom;
    let database_lock = bootstrap::prepare_storage(&config)?;
    let secrets: Secrets = bootstrap::load_or_generate(&config, &random)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Listen { addr: config.listen.to_string(), reason: e.to_string() })?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| StartError::Listen { addr: config.listen.to_string(), reason: e.to_string() })?;
    let public_url =
        if config.public_url.is_empty() { format!("http://{local_addr}") } else { config.public_url.clone() };
    let limits = Limits {
        header_timeout: Duration::from_secs(config.header_read_timeout_secs),
        max_connections: config.max_connections,
        body: BodyLimits {
            max_bytes: crate::json::MAX_BODY_BYTES,
            read_timeout: Duration::from_secs(config.body_read_timeout_secs),
            budget: BodyBudget::new(config.max_buffered_body_mb.saturating_mul(1024 * 1024)),
        },
    };
    let state = Arc::new(AppState::build_with_clock(config, public_url.clone(), &secrets, clock).await?);
    let (shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(crate::worker::run_outbox(state.clone(), shutdown_rx.clone()));
    let task = tokio::spawn(serve(listener, state.clone(), limits, shutdown_rx));
    Ok(RunningServer {
        local_addr,
        public_url,
        state,
        generated_admin_token: secrets.generated_admin_token,
        shutdown,
        task,
        _database_lock: database_lock,
    })
}

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The server's protective limits.
#[derive(Debug)]
struct Limits {
    header_timeout: Duration,
    max_connections: usize,
    body: BodyLimits,
}

async fn serve(listener: TcpListener, state: Arc<AppState>, limits: Limits, mut shutdown: watch::Receiver<bool>) {
    let router = Arc::new(Router::new(limits.body));
    // Read once: `getpid` is a system call (glibc no longer caches it), and every request id
    // carries the process id.
    let process_id = std::process::id();
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let mut refusing = http1::Builder::new();
    refusing.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(false);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            // Over the cap: one 503 with Retry-After, then the connection closes. The header
            // timeout bounds how long a refused client can hold even this.
            state.metrics().record("over_capacity", 503, Duration::ZERO);
            let refused = refusing.serve_connection(
                TokioIo::new(stream),
                service_fn(|_request| async {
                    Ok::<_, Infallible>(crate::json::problem_response(&crate::problem::ApiError::server_busy()))
                }),
            );
            tokio::spawn(async move {
                let _ = refused.await;
            });
            continue;
        };
        let state = state.clone();
        let router = router.clone();
        let service = service_fn(move |request| {
            let state = state.clone();
            let router = router.clone();
            async move {
                let started = Instant::now();
                let id = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
                let request_id = format!("{process_id:x}-{id:x}");
                let span = tracing::info_span!("request", request_id = %request_id, method = %request.method(), route = tracing::field::Empty, status = tracing::field::Empty);
                let (mut response, route) =
                    router.handle(state.clone(), request, Some(peer)).instrument(span.clone()).await;
                let status = response.status().as_u16();
                span.record("route", route);
                span.record("status", status);
                state.metrics().record(route, status, started.elapsed());
                if let Ok(v) = HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert("x-request-id", v);
                }
                span.in_scope(|| {
                    tracing::info!(
                        route,
                        status,
                        duration_us = started.elapsed().as_micros() as u64,
                        peer = %peer,
                        "request"
                    )
                });
                Ok::<_, Infallible>(response)
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("connections still open after 10 s; closing"),
    }
}
