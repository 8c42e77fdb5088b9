//! `cargo xtask fuzz --minutes N [--cases N]`: runs the property tests of the parsers (issue 15
//! item 17) for longer than CI does. CI runs proptest's default 256 cases per property (or
//! `PROPTEST_CASES`); this runs them with many more cases per round (`--cases`, default 20000),
//! each round with fresh random seeds, until the time is up. A failing case stops it, and
//! proptest prints the minimal input and saves it under `proptest-regressions/` so the next run
//! (CI included) tries it first.

use std::process::Command;
use std::time::{Duration, Instant};

/// The property-test targets: (package, cargo test arguments selecting them).
const TARGETS: &[(&str, &[&str])] = &[
    ("custody-identity", &["--test", "properties"]),
    ("custody-providers", &["--lib", "properties"]),
    ("custody-store", &["--lib", "cursor::tests::properties"]),
    ("custody-tests", &["--test", "properties"]),
];

/// Runs the properties until `--minutes` (default 10) have passed.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut minutes: u64 = 10;
    let mut cases: u64 = 20_000;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let value = |iter: &mut std::slice::Iter<'_, String>| -> Result<u64, String> {
            iter.next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{arg} needs a whole number"))
        };
        match arg.as_str() {
            "--minutes" => minutes = value(&mut iter)?,
            "--cases" => cases = value(&mut iter)?.max(1),
            other => return Err(format!("fuzz: unknown argument `{other}` (--minutes N, --cases N)")),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(minutes * 60);
    // Build once, so the first round's time goes to cases.
    for (package, selection) in TARGETS {
        cargo_test(package, selection, 1, &["--no-run"])?;
    }
    let mut round = 0u64;
    while Instant::now() < deadline {
        round += 1;
        println!("fuzz round {round}: {cases} cases per property");
        for (package, selection) in TARGETS {
            cargo_test(package, selection, cases, &[])?;
            if Instant::now() >= deadline {
                break;
            }
        }
    }
    println!("fuzz: {round} rounds in {minutes} minutes, no failing case");
    Ok(())
}

fn cargo_test(package: &str, selection: &[&str], cases: u64, extra: &[&str]) -> Result<(), String> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(["test", "-q", "-p", package]).args(extra).args(selection);
    // Each property runs `cases` cases; proptest seeds every run afresh.
    command.env("PROPTEST_CASES", cases.to_string());
    let status = command.status().map_err(|e| format!("cargo test -p {package}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo test -p {package} {} failed with PROPTEST_CASES={cases}", selection.join(" ")))
    }
}
