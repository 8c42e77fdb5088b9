//! The `custody` command line (section 2 of the shared surfaces contract): the clap definitions,
//! the exit codes, and [`run`], which executes every command except `serve` (the binary's
//! `main` runs the server itself, with logging and signal handling).
//!
//! `serve`, `migrate`, `reseal`, `--version` and `help` work on the local configuration; every
//! other command is an operator client of a running server over HTTP ([`remote`], on the
//! `custody-client` crate). The man page and shell completions are generated from the same
//! definitions ([`local::generate_man`], `custody completions SHELL`).

pub mod args;
pub mod io;
pub mod local;
pub mod output;
pub mod remote;

pub use args::{Cli, Command};
pub use io::Io;

use clap::{CommandFactory, Parser};
use std::ffi::OsString;

/// The exit codes of the contract; scripts rely on them.
pub mod exit {
    pub const OK: u8 = 0;
    /// Any other failure.
    pub const OTHER: u8 = 1;
    /// A usage error: unknown command or flag, missing setting, refused confirmation.
    pub const USAGE: u8 = 2;
    /// 401.
    pub const UNAUTHORIZED: u8 = 3;
    /// 404.
    pub const NOT_FOUND: u8 = 4;
    /// 409.
    pub const CONFLICT: u8 = 5;
    /// 503, or the server cannot be reached.
    pub const UNAVAILABLE: u8 = 6;
    /// 400, 403, 410, 422.
    pub const REFUSED: u8 = 7;
}

/// The version line: the package version and the git commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("CUSTODY_GIT_COMMIT"), ")");

/// The clap command tree (for the man page, completions and tests).
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parses `args` (the first is the program name). On a usage error, `--help` or `--version` the
/// text is written to `io` and the exit code returned instead.
pub fn parse(args: impl IntoIterator<Item = impl Into<OsString> + Clone>, io: &mut Io<'_>) -> Result<Cli, u8> {
    match Cli::try_parse_from(args) {
        Ok(cli) => Ok(cli),
        Err(e) => {
            let text = e.render().to_string();
            if e.use_stderr() {
                io.error_line(text.trim_end());
                Err(exit::USAGE)
            } else {
                io.line(text.trim_end());
                Err(exit::OK)
            }
        }
    }
}

/// Parses and runs one command line in-process (everything but `serve`), writing to `io`;
/// answers the exit code. The binary and the integration tests both go through here.
pub async fn run(args: impl IntoIterator<Item = impl Into<OsString> + Clone>, io: &mut Io<'_>) -> u8 {
    match parse(args, io) {
        Ok(cli) => execute(cli, io).await,
        Err(code) => code,
    }
}

/// Runs a parsed command line (everything but `serve`).
pub async fn execute(cli: Cli, io: &mut Io<'_>) -> u8 {
    let Cli { global, command } = cli;
    match command {
        None | Some(Command::Serve) => {
            io.error_line("error: `serve` runs from the custody binary, not in-process");
            exit::USAGE
        }
        Some(Command::Migrate { action }) => local::migrate(action, global.output, io).await,
        Some(Command::Reseal) => local::reseal(io).await,
        Some(Command::Completions { shell }) => local::completions(shell, io),
        Some(Command::GenerateMan { dir }) => local::generate_man(&dir, io),
        Some(remote_command) => remote::run(&global, remote_command, io).await,
    }
}
