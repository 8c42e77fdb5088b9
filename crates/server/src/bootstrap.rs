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
    #[error("another custody process is already serving the SQLite database {database} (it holds {lock}); stop it first, or use PostgreSQL to run several instances")]
    DatabaseInUse { database: String, lock: String },
}

/// The exclusive lock a server holds on its SQLite database for as long as it runs (released
/// when dropped, or by the kernel when the process dies). Two processes on one SQLite file would
/// each run their own refresh single-flight, and the loser of a refresh race would expire the
/// grant.
#[derive(Debug)]
pub struct DatabaseLock {
    _file: Option<std::fs::File>,
}

/// Prepares the data directory and the SQLite database file with owner-only permissions (0700
/// and 0600: SQLite creates its `-wal` and `-shm` files with the database file's mode), and takes
/// the [`DatabaseLock`]. Nothing to lock on PostgreSQL, where instances share the database by
/// design.
pub fn prepare_storage(config: &Config) -> Result<DatabaseLock, BootstrapError> {
    let dir = &config.data_dir;
    if config.database_is_default || dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| data_dir_error(dir, e))?;
        restrict(dir, 0o700).map_err(|e| data_dir_error(dir, e))?;
        restrict_files_in(dir);
    }
    let Some(database) = custody_store::sqlite_path(&config.database_url) else {
        return Ok(DatabaseLock { _file: None });
    };
    if let Some(parent) = database.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| data_dir_error(parent, e))?;
    }
    let mut lock_name = database.clone().into_os_string();
    lock_name.push(".lock");
    let lock_path = PathBuf::from(lock_name);
    let lock = owner_only_file(&lock_path).map_err(|e| data_dir_error(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(BootstrapError::DatabaseInUse {
                database: database.display().to_string(),
                lock: lock_path.display().to_string(),
            })
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(data_dir_error(&lock_path, e)),
    }
    // Created before SQLite opens it, so it (and the journal files SQLite derives from it) is
    // never readable by others, whatever the umask.
    owner_only_file(&database).map_err(|e| data_dir_error(&database, e))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = database.clone().into_os_string();
        name.push(suffix);
        let _ = restrict(Path::new(&name), 0o600);
    }
    Ok(DatabaseLock { _file: Some(lock) })
}

/// Opens (creating if needed) `path` with mode 0600, and narrows an existing file to 0600.
fn owner_only_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    restrict(path, 0o600)?;
    Ok(file)
}

/// Sets `path`'s permission bits (Unix; elsewhere nothing to do).
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

/// Narrows every regular file directly in `dir` to 0600 (files an older version created 0644).
fn restrict_files_in(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let _ = restrict(&entry.path(), 0o600);
            }
        }
    }
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
    restrict(dir, 0o700).map_err(|e| data_dir_error(dir, e))?;
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
