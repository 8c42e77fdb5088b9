//! The `custody` binary: `custody` (or `custody serve`) runs the server; every other command is
//! in [`custody_server::cli`].

use custody_server::cli::{self, io::StdStreams, Command};
use custody_server::config::Config;
use custody_server::logging;
use std::process::ExitCode;

/// mimalloc instead of glibc's allocator (see crates/server/Cargo.toml for why). Only the binary
/// sets it; services embedding the crates keep their own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Prints to stderr without panicking when stderr is closed (`eprintln!` would).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        say!("custody: cannot start the runtime: {e}");
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
            say!("custody: configuration error: {e}");
            return ExitCode::from(cli::exit::USAGE);
        }
    };
    let _log_guard = logging::init(&config);
    for name in unknown {
        tracing::warn!(variable = %name, "unknown CUSTODY_* environment variable ignored");
    }
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    let log_format = config.log_format;
    let server = match custody_server::start(config).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            say!("custody: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &server.generated_admin_token {
        // Printed once, on the start that generated it; later starts read it from the file.
        let token = std::fs::read_to_string(path).unwrap_or_default();
        let kept_in = path.display().to_string();
        logging::notice(
            log_format,
            &format!(
                "\nCustody generated an admin token (shown once; it is kept in {kept_in}):\n\n    {}\n",
                token.trim()
            ),
            &[("event", "admin_token_generated"), ("kept_in", &kept_in), ("admin_token", token.trim())],
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
