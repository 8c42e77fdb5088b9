//! The real `custody` binary, for suites that run it as a child process (log capture, signals,
//! the command line): built once per test process (a no-op when fresh), or named by `CUSTODY_BIN`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `custody` binary, built (or found fresh) once per process.
pub fn custody_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("CUSTODY_BIN") {
            return PathBuf::from(path);
        }
        // target/<profile>/deps/<this test> → target/<profile>
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_owned();
        let target_dir = profile_dir.parent().expect("target dir").to_owned();
        let profile = profile_dir.file_name().unwrap().to_string_lossy().into_owned();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
        let mut cmd = Command::new(cargo);
        // Selecting this package too keeps feature unification as in the test build, so the
        // libraries are reused rather than rebuilt.
        cmd.current_dir(&workspace)
            .args([
                "build",
                "--quiet",
                "-p",
                "custody-server",
                "-p",
                "custody-tests",
                "--bin",
                "custody",
                "--target-dir",
            ])
            .arg(&target_dir);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let status = cmd.status().expect("run cargo build for the custody binary");
        assert!(status.success(), "cargo build --bin custody failed");
        let bin = profile_dir.join(format!("custody{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}
