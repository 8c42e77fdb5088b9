//! Server configuration: defaults, an optional TOML file named by `CUSTODY_CONFIG`, then
//! `CUSTODY_*` environment variables, which win. Unknown `CUSTODY_*` variables are reported so a
//! typo does not silently fall back to a default.
//!
//! Each setting is declared once, in the `settings!` table below (the macro is in `declare.rs`):
//! its `Config` field, variable, file key, default, checks and documentation all come from its
//! row, and a test holds docs/configuration.md's table to the same rows.

mod declare;
mod written;

#[cfg(test)]
mod tests;

use custody_identity::Secret;
use declare::settings;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The variable naming the TOML file; it is read before the file, so it is no setting of it.
pub const CONFIG_FILE_VARIABLE: &str = "CUSTODY_CONFIG";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A configuration that cannot be used. Never echoes a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("cannot read the config file {path}: {reason}")]
    File { path: String, reason: String },
}

/// One setting as docs/configuration.md's table shows it.
#[derive(Debug)]
pub struct SettingDoc {
    /// The environment variable.
    pub env: &'static str,
    /// The key in the TOML file.
    pub file_key: &'static str,
    /// The default, as the table shows it.
    pub default: &'static str,
    /// What the setting does: the table's cell, one doc-comment line per entry.
    pub meaning: &'static [&'static str],
    /// The accepted numbers, which the meaning states as `(LO–HI`.
    pub range: Option<(i128, i128)>,
}

// The order of the rows is the order of the docs table, of the file's keys in its error
// messages, and in which settings are checked.
settings! {
    /// The server's configuration after defaults, file and environment are merged.
    #[derive(Debug, Clone)]
    pub struct Config;

    also known: CONFIG_FILE_VARIABLE,
        // Read by the test harness, not the server; listed so it is not reported as a typo.
        "CUSTODY_TEST_POSTGRES_URL";

    derived(configured) {
        /// Whether `database_url` is the embedded default (no explicit database configured).
        database_is_default: bool = !configured.database_url;
    }

    /// Address and port to listen on.
    listen: SocketAddr = "CUSTODY_LISTEN", default "127.0.0.1:8080";

    /// The URL clients and browsers reach Custody at; used for redirect URIs, the connect flow and
    /// webhook URLs. No trailing `/`.
    // Empty when not configured: the server then uses `http://` + the address it bound (which
    // differs from the configured one when the port is 0).
    public_url: String = "CUSTODY_PUBLIC_URL", unset "`http://` + listen address" => String::new(),
        check public_url;

    /// Where the embedded database and generated secrets live (created `0700`).
    data_dir: PathBuf = "CUSTODY_DATA_DIR", default "./custody-data";

    /// `sqlite://path`, `postgres://…` or `postgresql://…`. Any other scheme is refused.
    database_url: String = "CUSTODY_DATABASE_URL", unset "`sqlite://<data dir>/custody.db`"
        => format!("sqlite://{}", data_dir.join("custody.db").display());

    /// The most pooled database connections (1–1024).
    database_max_connections: Option<usize> = "CUSTODY_DATABASE_MAX_CONNECTIONS",
        unset "`8` (SQLite); 4 per CPU, 16 to 64 (PostgreSQL)" => None, range 1..=1024 else "out of range (1 to 1024)";

    /// The operator's bearer token for `/v1/apps/...`. When unset, generated on first start into
    /// `<data dir>/admin-token` (`0600`) and printed once.
    admin_token: Option<Secret> = "CUSTODY_ADMIN_TOKEN", unset "generated" => None;

    /// The key ring, `id:base64key,id:base64key,…`; each key is 32 random bytes
    /// (`openssl rand -base64 32`); ids are `[A-Za-z0-9._-]{1,64}`. The first key seals, every key
    /// opens. With SQLite and no value, a key ring is generated into `<data dir>/master-keys`
    /// (`0600`). With PostgreSQL it is required: every instance must share it.
    master_keys: Option<Secret> = "CUSTODY_MASTER_KEYS", unset "generated (SQLite only)" => None;

    /// Development and tests only: allows `http://` issuers on loopback, and outbound fetches
    /// (discovery, JWKS, OAuth endpoints) to loopback and private addresses.
    allow_insecure_issuers: bool = "CUSTODY_ALLOW_INSECURE_ISSUERS", default "false";

    /// Clock-skew tolerance on `exp`, `nbf` and `iat` (0–600).
    jwt_leeway_secs: i64 = "CUSTODY_JWT_LEEWAY_SECS", default "60", range 0..=600;

    /// At most one JWKS refetch per this period per issuer caused by an unknown `kid` (0–3600).
    jwks_refetch_cooldown_secs: u64 = "CUSTODY_JWKS_REFETCH_COOLDOWN_SECS", default "60", range 0..=3600;

    /// A key set is refreshed at most this long after it was fetched; a shorter
    /// `Cache-Control: max-age` on the JWKS response wins (a longer one does not) (0–86400; 0
    /// refreshes on every use). See "Key-set lifetimes" below.
    jwks_max_age_secs: u64 = "CUSTODY_JWKS_MAX_AGE_SECS", default "300", range 0..=86400;

    /// How long a token whose `kid` is not in the held key set waits for the refetch before it is
    /// refused 401 `invalid_user_token` (0–60000).
    jwks_miss_wait_ms: u64 = "CUSTODY_JWKS_MISS_WAIT_MS", default "2000", range 0..=60000;

    /// Longer user tokens are refused (1024–262144).
    max_token_bytes: usize = "CUSTODY_MAX_TOKEN_BYTES", default "16384", range 1024..=262144;

    /// Memory for the verified-token cache: a user token presented again skips the signature check
    /// until its `exp` (at most an hour) while the key that verified it is still in the IdP's key
    /// set. `exp`, `nbf`, `iss` and `aud` are still checked on every request, and user status,
    /// grants and policies are always read (0–65536; 0 disables it).
    token_cache_mb: u64 = "CUSTODY_TOKEN_CACHE_MB", default "64", range 0..=65536;

    /// A hand-out refreshes the access token first when it expires within this many seconds
    /// (0–3600).
    refresh_window_secs: i64 = "CUSTODY_REFRESH_WINDOW_SECS", default "60", range 0..=3600;

    /// Connections that do not send complete request headers in time are closed (1–300).
    header_read_timeout_secs: u64 = "CUSTODY_HEADER_READ_TIMEOUT_SECS", default "10", range 1..=300;

    /// A request body that has not fully arrived this long after the caller was admitted is
    /// answered 408 `body_timeout` (1–300).
    body_read_timeout_secs: u64 = "CUSTODY_BODY_READ_TIMEOUT_SECS", default "10", range 1..=300;

    /// Open client connections; a connection over the cap is answered 503 `server_busy` with
    /// `Retry-After: 1` and closed (1–1000000).
    max_connections: usize = "CUSTODY_MAX_CONNECTIONS", default "1024", range 1..=1_000_000;

    /// Request-body bytes buffered at once across all requests; a request whose body would exceed
    /// it is answered 503 `server_busy` with `Retry-After: 1` (1–65536).
    max_buffered_body_mb: usize = "CUSTODY_MAX_BUFFERED_BODY_MB", default "64", range 1..=65536;

    /// First retry delay of a failed revocation at a provider; doubles per attempt, capped at an
    /// hour (1–3600).
    outbox_retry_base_secs: i64 = "CUSTODY_OUTBOX_RETRY_SECS" in file "outbox_retry_secs", default "30",
        range 1..=3600;

    /// How long a proxied request may take at the provider, from sending it to the answer's last
    /// byte (1–3600); connecting has its own 10 s limit.
    proxy_timeout_secs: u64 = "CUSTODY_PROXY_TIMEOUT_SECS", default "60", range 1..=3600;

    /// The longest an OAuth provider call (code exchange, refresh, revocation) may take,
    /// connecting included (100–120000). Callers sharing a refresh attempt wait at most this long
    /// for the provider.
    provider_timeout_ms: u64 = "CUSTODY_PROVIDER_TIMEOUT_MS", default "10000", range 100..=120_000;

    /// Audit rows older than this many days are deleted by the background worker, hourly, in
    /// batches of 1000 (1–36500). A hand-out writes one row of about 340 bytes on SQLite and 440
    /// bytes on PostgreSQL (table and indexes), so 1 million hand-outs a day grow the log by about
    /// 0.35–0.45 GB a day.
    audit_retention_days: Option<u32> = "CUSTODY_AUDIT_RETENTION_DAYS", unset "unset (keep everything)" => None,
        range 1..=36500 else "out of range (1 to 36500 days; unset keeps everything)";

    /// A `tracing` filter, e.g. `info,custody_server=debug`.
    log: String = "CUSTODY_LOG", default "info";

    /// `pretty` or `json` (one JSON object per line, for log shippers).
    log_format: LogFormat = "CUSTODY_LOG_FORMAT", default "pretty";
}

impl Config {
    /// Loads the configuration from the process environment (and the file it names). Returns
    /// the configuration and the unknown `CUSTODY_*` variable names, for the caller to warn
    /// about once logging is set up.
    pub fn from_env() -> Result<(Config, Vec<String>), ConfigError> {
        let vars: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("CUSTODY_")).collect();
        Self::from_vars(&vars)
    }

    /// Loads the configuration from the given variables (and the file `CUSTODY_CONFIG` names).
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<(Config, Vec<String>), ConfigError> {
        let unknown = vars
            .keys()
            .filter(|k| k.starts_with("CUSTODY_") && !KNOWN_VARIABLES.contains(&k.as_str()))
            .cloned()
            .collect();
        let file = match vars.get(CONFIG_FILE_VARIABLE) {
            Some(path) => read_file(Path::new(path))?,
            None => FileSettings::default(),
        };
        Ok((Self::resolve(vars, file)?, unknown))
    }

    /// A configuration for tests and embedding: the defaults, but listening on an ephemeral
    /// loopback port, the given database, explicit secrets, insecure issuers allowed, quick
    /// outbox retries and quieter logs.
    pub fn for_tests(database_url: &str, data_dir: &Path, admin_token: &str, master_keys: &str) -> Config {
        // The declared defaults are checked like configured values; `tests::defaults` keeps them valid.
        let defaults =
            Self::resolve(&BTreeMap::new(), FileSettings::default()).expect("the declared defaults are valid");
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_owned(),
            database_url: database_url.to_owned(),
            database_is_default: false,
            admin_token: Some(Secret::new(admin_token)),
            master_keys: Some(Secret::new(master_keys)),
            allow_insecure_issuers: true,
            outbox_retry_base_secs: 1,
            log: "warn".into(),
            ..defaults
        }
    }
}

/// `CUSTODY_PUBLIC_URL`: an absolute http(s) URL without query or fragment, kept without its
/// trailing `/` so paths can be appended.
fn public_url(written: String) -> Result<String, &'static str> {
    let parsed = url::Url::parse(&written).map_err(|_| "expected an absolute http(s) URL")?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("expected an absolute http(s) URL without query or fragment");
    }
    Ok(written.trim_end_matches('/').to_owned())
}

fn invalid(name: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid { name, reason: reason.to_owned() }
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::File { path: path.display().to_string(), reason: e.kind().to_string() })?;
    toml::from_str(&text)
        .map_err(|e| ConfigError::File { path: path.display().to_string(), reason: e.message().to_owned() })
}
