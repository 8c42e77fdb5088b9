//! First-start secrets. On the embedded (SQLite) store, an operator who configured no admin token
//! or master key gets generated ones, kept in the data directory with owner-only permissions;
//! the admin token is printed once, when it is generated. PostgreSQL deployments run many
//! instances that must share one key ring, so there an explicit master key is required.

use crate::config::Config;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use custody_identity::Secret;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The admin token and key ring text the server runs with.
#[derive(Debug)]
pub struct Secrets {
    pub admin_token: Secret,
    pub master_keys: Secret,
    /// Set when this start generated the admin token; the caller prints it once.
    pub generated_admin_token: Option<PathBuf>,
}

/// Why the server cannot obtain its secrets.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("CUSTODY_MASTER_KEYS is required with PostgreSQL: every instance must share the same key ring")]
    MasterKeysRequired,
    #[error("cannot use the data directory {path}: {reason}")]
    DataDir { path: String, reason: String },
}

/// The file holding a generated admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The file holding a generated key ring.
pub const MASTER_KEYS_FILE: &str = "master-keys";

/// Resolves the admin token and key ring from the configuration, or from (or into) the data
/// directory as described in the module docs.
pub fn load_or_generate(
    config: &Config,
    random: &dyn custody_identity::ports::Random,
) -> Result<Secrets, BootstrapError> {
    let is_postgres =
        config.database_url.starts_with("postgres://") || config.database_url.starts_with("postgresql://");
    let master_keys = match &config.master_keys {
        Some(keys) => keys.clone(),
        None if is_postgres => return Err(BootstrapError::MasterKeysRequired),
        None => {
            let (keys, _) = read_or_create(&config.data_dir, MASTER_KEYS_FILE, || {
                format!("k1:{}", STANDARD.encode(random.bytes(32)))
            })?;
            keys
        }
    };
    let (admin_token, generated_admin_token) = match &config.admin_token {
        Some(token) => (token.clone(), None),
        None => {
            let (token, created) = read_or_create(&config.data_dir, ADMIN_TOKEN_FILE, || {
                format!("cadm_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random.bytes(32)))
            })?;
            (token, created.then(|| config.data_dir.join(ADMIN_TOKEN_FILE)))
        }
    };
    Ok(Secrets { admin_token, master_keys, generated_admin_token })
}

fn data_dir_error(path: &Path, e: std::io::Error) -> BootstrapError {
    BootstrapError::DataDir { path: path.display().to_string(), reason: e.to_string() }
}

/// Reads `dir/name`, or creates it with owner-only permissions holding `make()`. Returns the
/// value and whether it was created now. Creation uses `create_new`, so two processes starting
/// at once cannot both write: the loser reads the winner's value.
fn read_or_create(dir: &Path, name: &str, make: impl FnOnce() -> String) -> Result<(Secret, bool), BootstrapError> {
    std::fs::create_dir_all(dir).map_err(|e| data_dir_error(dir, e))?;
    restrict_dir(dir);
    let path = dir.join(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut file) => {
            let value = make();
            file.write_all(format!("{value}\n").as_bytes()).map_err(|e| data_dir_error(&path, e))?;
            file.sync_all().map_err(|e| data_dir_error(&path, e))?;
            Ok((Secret::new(value), true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(&path).map_err(|e| data_dir_error(&path, e))?;
            let value = text.trim().to_owned();
            if value.is_empty() {
                return Err(BootstrapError::DataDir {
                    path: path.display().to_string(),
                    reason: "the file is empty".into(),
                });
            }
            Ok((Secret::new(value), false))
        }
        Err(e) => Err(data_dir_error(&path, e)),
    }
}

fn restrict_dir(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Best effort: the files themselves are created 0600 regardless.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
}
