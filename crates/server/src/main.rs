//! The `custody` binary: `custody` (or `custody serve`) runs the server.

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

const USAGE: &str = "usage: custody [serve | reseal]\n\n  serve   run the server (the default)\n  reseal  re-seal every stored secret under the first key of CUSTODY_MASTER_KEYS, in batches,\n          while servers keep running\n\nConfiguration comes from CUSTODY_* environment variables and the TOML file named by CUSTODY_CONFIG; see docs/configuration.md.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reseal = match args.first().map(String::as_str) {
        None | Some("serve") => false,
        Some("reseal") => true,
        Some("-h" | "--help" | "help") => {
            say!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            say!("unknown command `{other}`\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (config, unknown) = match Config::from_env() {
        Ok(pair) => pair,
        Err(e) => {
            say!("custody: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let _log_guard = logging::init(&config);
    for name in unknown {
        tracing::warn!(variable = %name, "unknown CUSTODY_* environment variable ignored");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            say!("custody: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if reseal {
        runtime.block_on(reseal_all(config))
    } else {
        runtime.block_on(serve(config))
    }
}

async fn reseal_all(config: Config) -> ExitCode {
    let secrets = match custody_server::bootstrap::load_or_generate(&config, &custody_providers::crypto::OsRandom) {
        Ok(s) => s,
        Err(e) => {
            say!("custody reseal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let public_url = config.public_url.clone();
    let state = match custody_server::state::AppState::build(config, public_url, &secrets).await {
        Ok(state) => state,
        Err(e) => {
            say!("custody reseal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = match state.vault.reseal_all(500).await {
        Ok(report) => report,
        Err(e) => {
            say!("custody reseal: {e}");
            return ExitCode::FAILURE;
        }
    };
    // OIDC sign-in client secrets.
    match state.signin.reseal_client_secrets(500).await {
        Ok(more) => {
            report.examined += more.examined;
            report.resealed += more.resealed;
        }
        Err(e) => {
            say!("custody reseal: {e}");
            return ExitCode::FAILURE;
        }
    }
    say!("custody reseal: examined {} sealed values, re-sealed {}", report.examined, report.resealed);
    ExitCode::SUCCESS
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
