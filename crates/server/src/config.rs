//! Server configuration: defaults, an optional TOML file named by `CUSTODY_CONFIG`, then
//! `CUSTODY_*` environment variables, which win. Unknown `CUSTODY_*` variables are reported so a
//! typo does not silently fall back to a default.

use custody_identity::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The server's configuration after defaults, file and environment are merged.
#[derive(Debug, Clone)]
pub struct Config {
    /// `CUSTODY_LISTEN`, default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `CUSTODY_PUBLIC_URL` without a trailing `/`; empty when not configured, in which case the
    /// server uses `http://` + the address it bound.
    pub public_url: String,
    /// `CUSTODY_DATA_DIR`, default `./custody-data`.
    pub data_dir: PathBuf,
    /// `CUSTODY_DATABASE_URL`, default `sqlite://<data dir>/custody.db`.
    pub database_url: String,
    /// Whether `database_url` is the embedded default (no explicit database configured).
    pub database_is_default: bool,
    /// `CUSTODY_DATABASE_MAX_CONNECTIONS`: the most pooled database connections; unset takes 8
    /// for SQLite (writes serialise anyway) and 16 for PostgreSQL.
    pub database_max_connections: Option<usize>,
    /// `CUSTODY_ADMIN_TOKEN`.
    pub admin_token: Option<Secret>,
    /// `CUSTODY_MASTER_KEYS`, `id:base64key,...`; the first key seals.
    pub master_keys: Option<Secret>,
    /// `CUSTODY_ALLOW_INSECURE_ISSUERS`: http issuers on loopback and private addresses for
    /// outbound fetches, for development and tests.
    pub allow_insecure_issuers: bool,
    /// `CUSTODY_JWT_LEEWAY_SECS`, default 60.
    pub jwt_leeway_secs: i64,
    /// `CUSTODY_JWKS_REFETCH_COOLDOWN_SECS`, default 60.
    pub jwks_refetch_cooldown_secs: u64,
    /// `CUSTODY_JWKS_MAX_AGE_SECS`, default 300: a key set is refreshed at most this long after
    /// it was fetched (a shorter `Cache-Control: max-age` wins); 0 refreshes on every use, in
    /// the background.
    pub jwks_max_age_secs: u64,
    /// `CUSTODY_JWKS_MISS_WAIT_MS`, default 2000: how long a token with an unknown `kid` waits
    /// for the key set's refetch before it is refused.
    pub jwks_miss_wait_ms: u64,
    /// `CUSTODY_MAX_TOKEN_BYTES`, default 16384.
    pub max_token_bytes: usize,
    /// `CUSTODY_TOKEN_CACHE_MB`, default 64: memory for remembering verified user tokens so the
    /// same token presented again skips the signature check; 0 disables it.
    pub token_cache_mb: u64,
    /// `CUSTODY_REFRESH_WINDOW_SECS`, default 60.
    pub refresh_window_secs: i64,
    /// `CUSTODY_HEADER_READ_TIMEOUT_SECS`, default 10.
    pub header_read_timeout_secs: u64,
    /// `CUSTODY_BODY_READ_TIMEOUT_SECS`, default 10: how long a request body may take to arrive.
    pub body_read_timeout_secs: u64,
    /// `CUSTODY_MAX_CONNECTIONS`, default 1024: open client connections; more are answered 503
    /// with `Retry-After` and closed.
    pub max_connections: usize,
    /// `CUSTODY_MAX_BUFFERED_BODY_MB`, default 64: request-body bytes buffered at once across all
    /// requests; a request that would exceed it is answered 503 with `Retry-After`.
    pub max_buffered_body_mb: usize,
    /// `CUSTODY_OUTBOX_RETRY_SECS`, default 30: first retry delay of a failed provider
    /// revocation (doubling, capped at an hour).
    pub outbox_retry_base_secs: i64,
    /// `CUSTODY_PROXY_TIMEOUT_SECS`, default 60: how long a proxied request may take upstream,
    /// from sending it to the last byte of the answer.
    pub proxy_timeout_secs: u64,
    /// `CUSTODY_PROVIDER_TIMEOUT_MS`, default 10000: the longest an OAuth provider call (code
    /// exchange, refresh, revocation) may take, connection included.
    pub provider_timeout_ms: u64,
    /// `CUSTODY_AUDIT_RETENTION_DAYS`: audit rows older than this many days are pruned by the
    /// background worker; unset keeps everything.
    pub audit_retention_days: Option<u32>,
    /// `CUSTODY_LOG`, a tracing filter, default `info`.
    pub log: String,
    /// `CUSTODY_LOG_FORMAT`, `pretty` (default) or `json`.
    pub log_format: LogFormat,
}

/// A configuration that cannot be used. Never echoes a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("cannot read the config file {path}: {reason}")]
    File { path: String, reason: String },
}

/// The TOML file's shape: the same settings as the environment, lower-case, without the prefix.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    public_url: Option<String>,
    data_dir: Option<String>,
    database_url: Option<String>,
    database_max_connections: Option<usize>,
    admin_token: Option<String>,
    master_keys: Option<String>,
    allow_insecure_issuers: Option<bool>,
    jwt_leeway_secs: Option<i64>,
    jwks_refetch_cooldown_secs: Option<u64>,
    jwks_max_age_secs: Option<u64>,
    jwks_miss_wait_ms: Option<u64>,
    max_token_bytes: Option<usize>,
    token_cache_mb: Option<u64>,
    refresh_window_secs: Option<i64>,
    header_read_timeout_secs: Option<u64>,
    body_read_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    max_buffered_body_mb: Option<usize>,
    outbox_retry_secs: Option<i64>,
    proxy_timeout_secs: Option<u64>,
    provider_timeout_ms: Option<u64>,
    audit_retention_days: Option<u32>,
    log: Option<String>,
    log_format: Option<String>,
}

/// Every variable the server reads; anything else starting `CUSTODY_` is reported.
pub const KNOWN_VARIABLES: &[&str] = &[
    "CUSTODY_CONFIG",
    "CUSTODY_LISTEN",
    "CUSTODY_PUBLIC_URL",
    "CUSTODY_DATA_DIR",
    "CUSTODY_DATABASE_URL",
    "CUSTODY_DATABASE_MAX_CONNECTIONS",
    "CUSTODY_ADMIN_TOKEN",
    "CUSTODY_MASTER_KEYS",
    "CUSTODY_ALLOW_INSECURE_ISSUERS",
    "CUSTODY_JWT_LEEWAY_SECS",
    "CUSTODY_JWKS_REFETCH_COOLDOWN_SECS",
    "CUSTODY_JWKS_MAX_AGE_SECS",
    "CUSTODY_JWKS_MISS_WAIT_MS",
    "CUSTODY_MAX_TOKEN_BYTES",
    "CUSTODY_TOKEN_CACHE_MB",
    "CUSTODY_REFRESH_WINDOW_SECS",
    "CUSTODY_HEADER_READ_TIMEOUT_SECS",
    "CUSTODY_BODY_READ_TIMEOUT_SECS",
    "CUSTODY_MAX_CONNECTIONS",
    "CUSTODY_PROXY_TIMEOUT_SECS",
    "CUSTODY_MAX_BUFFERED_BODY_MB",
    "CUSTODY_OUTBOX_RETRY_SECS",
    "CUSTODY_PROVIDER_TIMEOUT_MS",
    "CUSTODY_AUDIT_RETENTION_DAYS",
    "CUSTODY_LOG",
    "CUSTODY_LOG_FORMAT",
    // Read by the test harness, not the server; listed so it is not reported as a typo.
    "CUSTODY_TEST_POSTGRES_URL",
];

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
        let file = match vars.get("CUSTODY_CONFIG") {
            Some(path) => read_file(Path::new(path))?,
            None => FileConfig::default(),
        };
        let pick =
            |name: &str, from_file: Option<String>| vars.get(name).cloned().or(from_file).filter(|v| !v.is_empty());

        let listen_raw = pick("CUSTODY_LISTEN", file.listen).unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr =
            listen_raw.parse().map_err(|_| invalid("CUSTODY_LISTEN", "expected an address like 127.0.0.1:8080"))?;
        // Without a configured public URL the server derives it from the address it actually bound
        // (which differs from the configured one when the port is 0).
        let public_url = match pick("CUSTODY_PUBLIC_URL", file.public_url) {
            None => String::new(),
            Some(public_url) => {
                let parsed = url::Url::parse(&public_url)
                    .map_err(|_| invalid("CUSTODY_PUBLIC_URL", "expected an absolute http(s) URL"))?;
                if !matches!(parsed.scheme(), "http" | "https")
                    || parsed.query().is_some()
                    || parsed.fragment().is_some()
                {
                    return Err(invalid(
                        "CUSTODY_PUBLIC_URL",
                        "expected an absolute http(s) URL without query or fragment",
                    ));
                }
                public_url.trim_end_matches('/').to_owned()
            }
        };
        let data_dir =
            PathBuf::from(pick("CUSTODY_DATA_DIR", file.data_dir).unwrap_or_else(|| "./custody-data".into()));
        let explicit_db = pick("CUSTODY_DATABASE_URL", file.database_url);
        let database_is_default = explicit_db.is_none();
        let database_url = explicit_db.unwrap_or_else(|| format!("sqlite://{}", data_dir.join("custody.db").display()));

        let boolean = |name: &'static str, from_file: Option<bool>| -> Result<bool, ConfigError> {
            match vars.get(name).map(String::as_str) {
                None | Some("") => Ok(from_file.unwrap_or(false)),
                Some("1" | "true" | "yes" | "on") => Ok(true),
                Some("0" | "false" | "no" | "off") => Ok(false),
                Some(_) => Err(invalid(name, "expected true or false")),
            }
        };
        fn number<T: std::str::FromStr + Copy>(
            vars: &BTreeMap<String, String>,
            name: &'static str,
            from_file: Option<T>,
            default: T,
            ok: impl Fn(T) -> bool,
        ) -> Result<T, ConfigError> {
            let value = match vars.get(name).filter(|v| !v.is_empty()) {
                Some(raw) => raw.parse().map_err(|_| invalid(name, "expected a whole number"))?,
                None => from_file.unwrap_or(default),
            };
            if ok(value) {
                Ok(value)
            } else {
                Err(invalid(name, "out of range"))
            }
        }

        let log_format = match pick("CUSTODY_LOG_FORMAT", file.log_format).as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(invalid("CUSTODY_LOG_FORMAT", "expected pretty or json")),
        };
        let config = Config {
            listen,
            public_url,
            data_dir,
            database_url,
            database_is_default,
            database_max_connections: match vars.get("CUSTODY_DATABASE_MAX_CONNECTIONS").filter(|v| !v.is_empty()) {
                Some(raw) => Some(
                    raw.parse().map_err(|_| invalid("CUSTODY_DATABASE_MAX_CONNECTIONS", "expected a whole number"))?,
                ),
                None => file.database_max_connections,
            }
            .map(|v: usize| {
                if (1..=1024).contains(&v) {
                    Ok(v)
                } else {
                    Err(invalid("CUSTODY_DATABASE_MAX_CONNECTIONS", "out of range (1 to 1024)"))
                }
            })
            .transpose()?,
            admin_token: pick("CUSTODY_ADMIN_TOKEN", file.admin_token).map(Secret::new),
            master_keys: pick("CUSTODY_MASTER_KEYS", file.master_keys).map(Secret::new),
            allow_insecure_issuers: boolean("CUSTODY_ALLOW_INSECURE_ISSUERS", file.allow_insecure_issuers)?,
            jwt_leeway_secs: number(vars, "CUSTODY_JWT_LEEWAY_SECS", file.jwt_leeway_secs, 60, |v| {
                (0..=600).contains(&v)
            })?,
            jwks_refetch_cooldown_secs: number(
                vars,
                "CUSTODY_JWKS_REFETCH_COOLDOWN_SECS",
                file.jwks_refetch_cooldown_secs,
                60,
                |v| v <= 3600,
            )?,
            jwks_max_age_secs: number(vars, "CUSTODY_JWKS_MAX_AGE_SECS", file.jwks_max_age_secs, 300, |v| v <= 86_400)?,
            jwks_miss_wait_ms: number(vars, "CUSTODY_JWKS_MISS_WAIT_MS", file.jwks_miss_wait_ms, 2000, |v| {
                v <= 60_000
            })?,
            max_token_bytes: number(vars, "CUSTODY_MAX_TOKEN_BYTES", file.max_token_bytes, 16 * 1024, |v| {
                (1024..=256 * 1024).contains(&v)
            })?,
            token_cache_mb: number(vars, "CUSTODY_TOKEN_CACHE_MB", file.token_cache_mb, 64, |v| v <= 64 * 1024)?,
            refresh_window_secs: number(vars, "CUSTODY_REFRESH_WINDOW_SECS", file.refresh_window_secs, 60, |v| {
                (0..=3600).contains(&v)
            })?,
            header_read_timeout_secs: number(
                vars,
                "CUSTODY_HEADER_READ_TIMEOUT_SECS",
                file.header_read_timeout_secs,
                10,
                |v| (1..=300).contains(&v),
            )?,
            body_read_timeout_secs: number(
                vars,
                "CUSTODY_BODY_READ_TIMEOUT_SECS",
                file.body_read_timeout_secs,
                10,
                |v| (1..=300).contains(&v),
            )?,
            max_connections: number(vars, "CUSTODY_MAX_CONNECTIONS", file.max_connections, 1024, |v| {
                (1..=1_000_000).contains(&v)
            })?,
            max_buffered_body_mb: number(vars, "CUSTODY_MAX_BUFFERED_BODY_MB", file.max_buffered_body_mb, 64, |v| {
                (1..=64 * 1024).contains(&v)
            })?,
            outbox_retry_base_secs: number(vars, "CUSTODY_OUTBOX_RETRY_SECS", file.outbox_retry_secs, 30, |v| {
                (1..=3600).contains(&v)
            })?,
            proxy_timeout_secs: number(vars, "CUSTODY_PROXY_TIMEOUT_SECS", file.proxy_timeout_secs, 60, |v| {
                (1..=3600).contains(&v)
            })?,
            provider_timeout_ms: number(vars, "CUSTODY_PROVIDER_TIMEOUT_MS", file.provider_timeout_ms, 10_000, |v| {
                (100..=120_000).contains(&v)
            })?,
            audit_retention_days: match vars.get("CUSTODY_AUDIT_RETENTION_DAYS").filter(|v| !v.is_empty()) {
                None => file.audit_retention_days,
                Some(_) => Some(number(vars, "CUSTODY_AUDIT_RETENTION_DAYS", None, 0, |_| true)?),
            }
            .map(|days| {
                if (1..=36_500).contains(&days) {
                    Ok(days)
                } else {
                    Err(invalid(
                        "CUSTODY_AUDIT_RETENTION_DAYS",
                        "out of range (1 to 36500 days; unset keeps everything)",
                    ))
                }
            })
            .transpose()?,
            log: pick("CUSTODY_LOG", file.log).unwrap_or_else(|| "info".into()),
            log_format,
        };
        Ok((config, unknown))
    }

    /// A configuration for tests and embedding: listen on an ephemeral loopback port, the given
    /// database, explicit secrets, insecure issuers allowed.
    pub fn for_tests(database_url: &str, data_dir: &Path, admin_token: &str, master_keys: &str) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: String::new(),
            data_dir: data_dir.to_owned(),
            database_url: database_url.to_owned(),
            database_is_default: false,
            database_max_connections: None,
            admin_token: Some(Secret::new(admin_token)),
            master_keys: Some(Secret::new(master_keys)),
            allow_insecure_issuers: true,
            jwt_leeway_secs: 60,
            jwks_refetch_cooldown_secs: 60,
            jwks_max_age_secs: 300,
            jwks_miss_wait_ms: 2000,
            max_token_bytes: 16 * 1024,
            token_cache_mb: 64,
            refresh_window_secs: 60,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 10,
            max_connections: 1024,
            max_buffered_body_mb: 64,
            outbox_retry_base_secs: 1,
            proxy_timeout_secs: 60,
            provider_timeout_ms: 10_000,
            audit_retention_days: None,
            log: "warn".into(),
            log_format: LogFormat::Pretty,
        }
    }
}

fn invalid(name: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid { name, reason: reason.to_owned() }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::File { path: path.display().to_string(), reason: e.kind().to_string() })?;
    toml::from_str(&text)
        .map_err(|e| ConfigError::File { path: path.display().to_string(), reason: e.message().to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults() {
        let (c, unknown) = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.public_url, "", "derived from the bound address at start");
        assert_eq!(c.database_url, "sqlite://./custody-data/custody.db");
        assert!(c.database_is_default);
        assert_eq!(c.jwt_leeway_secs, 60);
        assert!(!c.allow_insecure_issuers);
        assert!(unknown.is_empty());
        assert_eq!(c.provider_timeout_ms, 10_000);
        assert_eq!(c.audit_retention_days, None, "audit rows are kept unless a retention is set");
    }

    #[test]
    fn audit_retention_days() {
        let (c, _) = Config::from_vars(&vars(&[("CUSTODY_AUDIT_RETENTION_DAYS", "90")])).unwrap();
        assert_eq!(c.audit_retention_days, Some(90));
        for bad in ["0", "-1", "36501", "ninety"] {
            let err = Config::from_vars(&vars(&[("CUSTODY_AUDIT_RETENTION_DAYS", bad)])).unwrap_err();
            assert!(err.to_string().starts_with("CUSTODY_AUDIT_RETENTION_DAYS"), "{bad}: {err}");
        }
    }

    #[test]
    fn env_overrides_file_and_unknown_are_reported() {
        let dir = std::env::temp_dir().join(format!("custody-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("custody.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\njwt_leeway_secs = 5\npublic_url = \"https://vault.example.com/\"\n",
        )
        .unwrap();
        let (c, unknown) = Config::from_vars(&vars(&[
            ("CUSTODY_CONFIG", file.to_str().unwrap()),
            ("CUSTODY_JWT_LEEWAY_SECS", "30"),
            ("CUSTODY_LISTNE", "x"),
        ]))
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.jwt_leeway_secs, 30);
        assert_eq!(c.public_url, "https://vault.example.com");
        assert_eq!(unknown, vec!["CUSTODY_LISTNE".to_string()]);
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::from_vars(&vars(&[("CUSTODY_ALLOW_INSECURE_ISSUERS", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("CUSTODY_ALLOW_INSECURE_ISSUERS"));
        let err = Config::from_vars(&vars(&[("CUSTODY_LISTEN", "nope")])).unwrap_err();
        assert!(err.to_string().contains("CUSTODY_LISTEN"));
        let err = Config::from_vars(&vars(&[("CUSTODY_ADMIN_TOKEN", "s3cret"), ("CUSTODY_JWT_LEEWAY_SECS", "-1")]))
            .unwrap_err();
        assert!(!err.to_string().contains("s3cret"));
    }
}
