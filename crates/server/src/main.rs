//! The `custody` binary: `custody` (or `custody serve`) runs the server; every other command is
//! in [`custody_server::cli`].

use custody_server::cli::{self, io::StdStreams, Command};
use custody_server::config::{Config, LogFormat};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's allocator (see crates/server/Cargo.toml for why). Only the binary
/// sets it; services embedding the crates keep their own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Starts logging for `serve`. Kept in one small function: how log lines reach stderr is changed
/// in one place.
fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("custody: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    let mut streams = StdStreams::new();
    let parsed = cli::parse(std::env::args_os(), &mut streams.io());
    let cli = match parsed {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match cli.command {
        None | Some(Command::Serve) => serve_from_env(&runtime),
        Some(_) => ExitCode::from(runtime.block_on(cli::execute(cli, &mut streams.io()))),
    }
}

fn serve_from_env(runtime: &tokio::runtime::Runtime) -> ExitCode {
    let (config, unknown) = match Config::from_env() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("custody: configuration error: {e}");
            return ExitCode::from(cli::exit::USAGE);
        }
    };
    init_logging(&config);
    for name in unknown {
        tracing::warn!(variable = %name, "unknown CUSTODY_* environment variable ignored");
    }
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    let server = match custody_server::start(config).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("custody: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &server.generated_admin_token {
        // Printed once, on the start that generated it; later starts read it from the file.
        let token = std::fs::read_to_string(path).unwrap_or_default();
        eprintln!(
            "\nCustody generated an admin token (shown once; it is kept in {}):\n\n    {}\n",
            path.display(),
            token.trim()
        );
    }
    tracing::info!(listen = %server.local_addr, public_url = %server.public_url, "custody is serving");
    let stop = server.shutdown_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    server.wait().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
