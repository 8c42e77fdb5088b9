//! Where a command reads and writes: the process's stdin/stdout/stderr in the binary, buffers in
//! the tests. Also whether each is a terminal (table output, confirmations, progress) and the
//! terminal's width.

use std::io::{BufRead, IsTerminal, Write};

/// A command's streams and what it knows about the terminal.
pub struct Io<'a> {
    pub out: &'a mut (dyn Write + Send),
    pub err: &'a mut (dyn Write + Send),
    pub input: &'a mut (dyn BufRead + Send),
    /// stdout is a terminal: tables by default.
    pub out_is_terminal: bool,
    /// stdin is a terminal: destructive commands may ask.
    pub input_is_terminal: bool,
    /// stderr is a terminal: progress lines are redrawn.
    pub err_is_terminal: bool,
    /// The terminal's width in columns, when known.
    pub width: Option<usize>,
}

impl std::fmt::Debug for Io<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("out_is_terminal", &self.out_is_terminal)
            .field("input_is_terminal", &self.input_is_terminal)
            .field("width", &self.width)
            .finish_non_exhaustive()
    }
}

/// The process's own streams, locked for the command's duration.
#[derive(Debug)]
pub struct StdStreams {
    out: std::io::Stdout,
    err: std::io::Stderr,
    input: std::io::BufReader<std::io::Stdin>,
}

impl StdStreams {
    pub fn new() -> StdStreams {
        StdStreams { out: std::io::stdout(), err: std::io::stderr(), input: std::io::BufReader::new(std::io::stdin()) }
    }

    /// An [`Io`] over the process's streams.
    pub fn io(&mut self) -> Io<'_> {
        let out_is_terminal = self.out.is_terminal();
        let err_is_terminal = self.err.is_terminal();
        let input_is_terminal = std::io::stdin().is_terminal();
        let width = terminal_size::terminal_size()
            .map(|(w, _)| usize::from(w.0))
            .or_else(|| std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()));
        Io {
            out: &mut self.out,
            err: &mut self.err,
            input: &mut self.input,
            out_is_terminal,
            input_is_terminal,
            err_is_terminal,
            width,
        }
    }
}

impl Default for StdStreams {
    fn default() -> Self {
        Self::new()
    }
}

impl Io<'_> {
    /// Writes a line to stdout. A closed pipe (`custody apps list | head`) is not an error worth
    /// reporting, so write failures are ignored.
    pub fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    /// Writes a line to stderr.
    pub fn error_line(&mut self, text: &str) {
        let _ = writeln!(self.err, "{text}");
    }

    /// Rewrites the progress line on a terminal; nothing otherwise.
    pub fn progress(&mut self, text: &str) {
        if self.err_is_terminal {
            let _ = write!(self.err, "\r\x1b[2K{text}");
            let _ = self.err.flush();
        }
    }

    /// Reads a secret given as `-`: all of stdin, without the terminating newline. Empty input is
    /// refused, naming `flag`.
    pub fn read_secret(&mut self, flag: &str) -> Result<String, String> {
        let mut text = String::new();
        self.input.read_to_string(&mut text).map_err(|e| format!("{flag} -: cannot read stdin: {e}"))?;
        let secret = text.trim_end_matches(['\r', '\n']).to_owned();
        if secret.is_empty() {
            return Err(format!("{flag} -: stdin was empty"));
        }
        Ok(secret)
    }

    /// Asks before a destructive step. `--yes` skips; without a terminal and without `--yes` the
    /// command is refused (exit 2); on a terminal only `y` or `yes` goes ahead.
    pub fn confirm(&mut self, yes: bool, question: &str) -> Result<(), u8> {
        if yes {
            return Ok(());
        }
        if !self.input_is_terminal {
            self.error_line(&format!(
                "error: {question}: refusing without confirmation; pass --yes (stdin is not a terminal)"
            ));
            return Err(super::exit::USAGE);
        }
        let _ = write!(self.err, "{question}? [y/N] ");
        let _ = self.err.flush();
        let mut answer = String::new();
        let _ = self.input.read_line(&mut answer);
        if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            Ok(())
        } else {
            self.error_line("aborted: nothing was changed");
            Err(super::exit::OTHER)
        }
    }
}
