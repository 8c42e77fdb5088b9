//! The commands that work on the local configuration and database instead of a running server:
//! `migrate up|down|status`, `reseal`, and the generated `completions` and man pages.

use super::args::{MigrateAction, Output, Shell};
use super::{exit, output, Io};
use crate::config::Config;
use custody_store::{Store, StoreOptions};
use std::path::{Path, PathBuf};

/// The configuration from `CUSTODY_*` and `CUSTODY_CONFIG`; a bad one is a usage error.
fn config(io: &mut Io<'_>) -> Result<Config, u8> {
    match Config::from_env() {
        Ok((config, unknown)) => {
            for name in unknown {
                io.error_line(&format!("warning: unknown environment variable {name} ignored"));
            }
            Ok(config)
        }
        Err(e) => {
            io.error_line(&format!("error: configuration: {e}"));
            Err(exit::USAGE)
        }
    }
}

/// The file of a `sqlite:` database URL (`sqlite://path` or `sqlite:path`).
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    Some(PathBuf::from(rest.strip_prefix("//").unwrap_or(rest)))
}

/// The database name of a PostgreSQL URL, for error messages (never the password).
fn postgres_database(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .map(|u| u.path().trim_start_matches('/').to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "(the user's default database)".to_owned())
}

/// `custody migrate up|down|status` on `CUSTODY_DATABASE_URL`, with the migrations embedded in
/// the binary. `status` never creates a database.
pub async fn migrate(action: MigrateAction, format: Option<Output>, io: &mut Io<'_>) -> u8 {
    let config = match config(io) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let url = config.database_url.clone();
    let postgres = !url.starts_with("sqlite:");
    let name = match sqlite_file(&url) {
        Some(path) => format!("the SQLite database {}", path.display()),
        None => format!("the PostgreSQL database {}", postgres_database(&url)),
    };
    if let (MigrateAction::Status, Some(path)) = (action, sqlite_file(&url)) {
        if !path.exists() {
            io.error_line(&format!(
                "error: {name} does not exist (CUSTODY_DATABASE_URL or CUSTODY_DATA_DIR); `custody migrate up` creates it"
            ));
            return exit::OTHER;
        }
    }
    let store = match Store::connect_without_migrating(&url, StoreOptions::default()).await {
        Ok(store) => store,
        Err(e) => {
            let hint = if postgres { " (it must exist; create it with `createdb` or CREATE DATABASE)" } else { "" };
            io.error_line(&format!("error: cannot open {name}{hint}: {e}"));
            return exit::OTHER;
        }
    };
    let result = match action {
        MigrateAction::Up => store.migrate_up().await.map(|applied| {
            if applied.is_empty() {
                io.line("no pending migrations");
            }
            for version in applied {
                io.line(&format!("applied {version}"));
            }
        }),
        MigrateAction::Down => store.migrate_down().await.map(|reverted| match reverted {
            Some(version) => io.line(&format!("reverted {version}")),
            None => io.line("nothing to revert"),
        }),
        MigrateAction::Status => store.migration_status().await.map(|list| {
            let rows: Vec<serde_json::Value> = list
                .iter()
                .map(|m| serde_json::json!({"name": m.name, "version": m.version, "applied": m.applied}))
                .collect();
            match output::format(format, io) {
                Output::Json => output::list(io, Output::Json, &rows, &[]),
                Output::Table => {
                    for m in &list {
                        io.line(&format!("{:<8} {}", if m.applied { "applied" } else { "pending" }, m.name));
                    }
                }
            }
        }),
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            io.error_line(&format!("error: migrate on {name}: {e}"));
            exit::OTHER
        }
    }
}

/// `custody reseal`: re-seals every stored secret under the current key, with a progress line on
/// a terminal.
pub async fn reseal(io: &mut Io<'_>) -> u8 {
    let config = match config(io) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let secrets = match crate::bootstrap::load_or_generate(&config, &custody_providers::OsRandom) {
        Ok(s) => s,
        Err(e) => {
            io.error_line(&format!("error: reseal: {e}"));
            return exit::OTHER;
        }
    };
    let public_url = config.public_url.clone();
    let state = match crate::state::AppState::build(config, public_url, &secrets).await {
        Ok(state) => state,
        Err(e) => {
            io.error_line(&format!("error: reseal: {e}"));
            return exit::OTHER;
        }
    };
    let mut report = {
        let result = state
            .vault()
            .reseal_all_with_progress(500, |so_far, kinds_left| {
                io.progress(&format!(
                    "examined {}  re-sealed {}  remaining: {kinds_left} kinds of sealed values, then OIDC client secrets",
                    so_far.examined, so_far.resealed
                ));
            })
            .await;
        match result {
            Ok(report) => report,
            Err(e) => {
                io.progress("");
                io.error_line(&format!("error: reseal: {e}"));
                return exit::OTHER;
            }
        }
    };
    match state.signin().reseal_client_secrets(500).await {
        Ok(more) => {
            report.examined += more.examined;
            report.resealed += more.resealed;
        }
        Err(e) => {
            io.progress("");
            io.error_line(&format!("error: reseal: {e}"));
            return exit::OTHER;
        }
    }
    io.progress("");
    if io.err_is_terminal {
        io.error_line("");
    }
    io.error_line(&format!(
        "custody reseal: examined {} sealed values, re-sealed {}, remaining 0",
        report.examined, report.resealed
    ));
    exit::OK
}

/// `custody completions SHELL`: the completion script on stdout.
pub fn completions(shell: Shell, io: &mut Io<'_>) -> u8 {
    let mut command = super::command();
    let mut buffer = Vec::new();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut command, "custody", &mut buffer);
    if io.out.write_all(&buffer).is_err() {
        return exit::OTHER;
    }
    exit::OK
}

/// `custody generate-man DIR`: `custody.1` and one page per subcommand (`custody-apps.1`, ...).
pub fn generate_man(dir: &Path, io: &mut Io<'_>) -> u8 {
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|_| clap_mangen::generate_to(super::command(), dir)) {
        io.error_line(&format!("error: cannot write the man pages to {}: {e}", dir.display()));
        return exit::OTHER;
    }
    io.line(&format!("wrote man pages to {}", dir.display()));
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_name_their_database() {
        assert_eq!(sqlite_file("sqlite://data/custody.db"), Some(PathBuf::from("data/custody.db")));
        assert_eq!(
            sqlite_file("sqlite:/var/lib/custody/custody.db"),
            Some(PathBuf::from("/var/lib/custody/custody.db"))
        );
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
        assert_eq!(postgres_database("postgres://u:secret@h:5432/custody"), "custody");
    }
}
