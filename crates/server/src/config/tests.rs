use super::*;

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A TOML file with `text`, named by `CUSTODY_CONFIG` in the returned variables.
fn with_file(dir: &tempfile::TempDir, text: &str, pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let file = dir.path().join("custody.toml");
    std::fs::write(&file, text).unwrap();
    let mut vars = vars(pairs);
    vars.insert(CONFIG_FILE_VARIABLE.into(), file.to_str().unwrap().into());
    vars
}

#[test]
fn defaults() {
    let (c, unknown) = Config::from_vars(&vars(&[])).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.public_url, "", "derived from the bound address at start");
    assert_eq!(c.data_dir, PathBuf::from("./custody-data"));
    assert_eq!(c.database_url, "sqlite://./custody-data/custody.db");
    assert!(c.database_is_default);
    assert_eq!(c.database_max_connections, None);
    assert!(c.admin_token.is_none() && c.master_keys.is_none());
    assert_eq!(c.jwt_leeway_secs, 60);
    assert!(!c.allow_insecure_issuers);
    assert!(unknown.is_empty());
    assert_eq!(
        (c.jwks_refetch_cooldown_secs, c.jwks_max_age_secs, c.jwks_miss_wait_ms, c.max_token_bytes, c.token_cache_mb),
        (60, 300, 2000, 16 * 1024, 64)
    );
    assert_eq!((c.refresh_window_secs, c.header_read_timeout_secs, c.body_read_timeout_secs), (60, 10, 10));
    assert_eq!((c.max_connections, c.max_buffered_body_mb, c.outbox_retry_base_secs), (1024, 64, 30));
    assert_eq!((c.proxy_timeout_secs, c.provider_timeout_ms), (60, 10_000));
    assert_eq!(c.audit_retention_days, None, "audit rows are kept unless a retention is set");
    assert_eq!((c.log.as_str(), c.log_format), ("info", LogFormat::Pretty));
}

#[test]
fn for_tests_is_the_defaults_with_test_friendly_changes() {
    let c = Config::for_tests("sqlite:///tmp/x.db", Path::new("/tmp/x"), "admin", "k1:key");
    assert_eq!(c.listen.to_string(), "127.0.0.1:0");
    assert_eq!((c.database_url.as_str(), c.data_dir.as_path()), ("sqlite:///tmp/x.db", Path::new("/tmp/x")));
    assert!(!c.database_is_default);
    assert_eq!(c.admin_token.as_ref().map(Secret::expose), Some("admin"));
    assert_eq!(c.master_keys.as_ref().map(Secret::expose), Some("k1:key"));
    assert!(c.allow_insecure_issuers);
    assert_eq!((c.outbox_retry_base_secs, c.log.as_str()), (1, "warn"));
    assert_eq!((c.public_url.as_str(), c.jwt_leeway_secs, c.max_connections), ("", 60, 1024));
}

#[test]
fn audit_retention_days() {
    let (c, _) = Config::from_vars(&vars(&[("CUSTODY_AUDIT_RETENTION_DAYS", "90")])).unwrap();
    assert_eq!(c.audit_retention_days, Some(90));
    for bad in ["0", "-1", "36501", "ninety"] {
        let err = Config::from_vars(&vars(&[("CUSTODY_AUDIT_RETENTION_DAYS", bad)])).unwrap_err();
        assert!(err.to_string().starts_with("CUSTODY_AUDIT_RETENTION_DAYS"), "{bad}: {err}");
    }
    let err = Config::from_vars(&vars(&[("CUSTODY_AUDIT_RETENTION_DAYS", "0")])).unwrap_err();
    assert_eq!(err.to_string(), "CUSTODY_AUDIT_RETENTION_DAYS: out of range (1 to 36500 days; unset keeps everything)");
}

#[test]
fn env_overrides_file_and_unknown_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let vars = with_file(
        &dir,
        "listen = \"127.0.0.1:9000\"\njwt_leeway_secs = 5\npublic_url = \"https://vault.example.com/\"\n",
        &[("CUSTODY_JWT_LEEWAY_SECS", "30"), ("CUSTODY_LISTNE", "x")],
    );
    let (c, unknown) = Config::from_vars(&vars).unwrap();
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.jwt_leeway_secs, 30);
    assert_eq!(c.public_url, "https://vault.example.com");
    assert_eq!(unknown, vec!["CUSTODY_LISTNE".to_string()]);
}

#[test]
fn the_file_uses_each_settings_key_and_its_renamed_one() {
    let dir = tempfile::tempdir().unwrap();
    let vars = with_file(
        &dir,
        "outbox_retry_secs = 7\ndatabase_url = \"postgres://db/custody\"\naudit_retention_days = 30\n\
         allow_insecure_issuers = true\nlog_format = \"json\"\n",
        &[],
    );
    let (c, _) = Config::from_vars(&vars).unwrap();
    assert_eq!(c.outbox_retry_base_secs, 7);
    assert_eq!(c.database_url, "postgres://db/custody");
    assert!(!c.database_is_default, "a configured database is not the embedded default");
    assert_eq!(c.audit_retention_days, Some(30));
    assert!(c.allow_insecure_issuers);
    assert_eq!(c.log_format, LogFormat::Json);
}

#[test]
fn the_files_mistakes_are_file_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        ("listne = \"x\"\n", "unknown field `listne`"),
        ("outbox_retry_base_secs = 1\n", "unknown field `outbox_retry_base_secs`"),
        ("jwt_leeway_secs = \"5\"\n", "invalid type"),
        ("listen = 8080\n", "invalid type"),
    ] {
        let err = Config::from_vars(&with_file(&dir, text, &[])).unwrap_err();
        assert!(matches!(err, ConfigError::File { .. }), "{text}: {err}");
        assert!(err.to_string().contains(expected), "{text}: {err}");
    }
    let err = Config::from_vars(&vars(&[(CONFIG_FILE_VARIABLE, "/nonexistent/custody.toml")])).unwrap_err();
    assert!(err.to_string().starts_with("cannot read the config file /nonexistent/custody.toml"), "{err}");
}

#[test]
fn a_files_value_out_of_range_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let err = Config::from_vars(&with_file(&dir, "refresh_window_secs = 3601\n", &[])).unwrap_err();
    assert_eq!(err.to_string(), "CUSTODY_REFRESH_WINDOW_SECS: out of range");
}

#[test]
fn an_empty_variable_counts_as_unset() {
    let dir = tempfile::tempdir().unwrap();
    let file = "jwt_leeway_secs = 5\nallow_insecure_issuers = true\nlog = \"debug\"\n";
    // Numbers and switches: the file's value applies.
    let (c, _) = Config::from_vars(&with_file(
        &dir,
        file,
        &[("CUSTODY_JWT_LEEWAY_SECS", ""), ("CUSTODY_ALLOW_INSECURE_ISSUERS", "")],
    ))
    .unwrap();
    assert_eq!(c.jwt_leeway_secs, 5);
    assert!(c.allow_insecure_issuers);
    // Text: the empty value wins over the file and, being empty, leaves the default.
    let (c, _) = Config::from_vars(&with_file(&dir, file, &[("CUSTODY_LOG", ""), ("CUSTODY_PUBLIC_URL", "")])).unwrap();
    assert_eq!(c.log, "info");
    assert_eq!(c.public_url, "");
}

#[test]
fn bad_values_are_named() {
    let err = Config::from_vars(&vars(&[("CUSTODY_ALLOW_INSECURE_ISSUERS", "maybe")])).unwrap_err();
    assert_eq!(err.to_string(), "CUSTODY_ALLOW_INSECURE_ISSUERS: expected true or false");
    let err = Config::from_vars(&vars(&[("CUSTODY_LISTEN", "nope")])).unwrap_err();
    assert_eq!(err.to_string(), "CUSTODY_LISTEN: expected an address like 127.0.0.1:8080");
    let err = Config::from_vars(&vars(&[("CUSTODY_JWT_LEEWAY_SECS", "soon")])).unwrap_err();
    assert_eq!(err.to_string(), "CUSTODY_JWT_LEEWAY_SECS: expected a whole number");
    let err = Config::from_vars(&vars(&[("CUSTODY_LOG_FORMAT", "xml")])).unwrap_err();
    assert_eq!(err.to_string(), "CUSTODY_LOG_FORMAT: expected pretty or json");
    let err = Config::from_vars(&vars(&[("CUSTODY_DATABASE_MAX_CONNECTIONS", "0")])).unwrap_err();
    assert_eq!(err.to_string(), "CUSTODY_DATABASE_MAX_CONNECTIONS: out of range (1 to 1024)");
    for (url, reason) in [
        ("vault.example.com", "expected an absolute http(s) URL"),
        ("ftp://vault.example.com", "expected an absolute http(s) URL without query or fragment"),
        ("https://vault.example.com/?a=1", "expected an absolute http(s) URL without query or fragment"),
    ] {
        let err = Config::from_vars(&vars(&[("CUSTODY_PUBLIC_URL", url)])).unwrap_err();
        assert_eq!(err.to_string(), format!("CUSTODY_PUBLIC_URL: {reason}"));
    }
    let err =
        Config::from_vars(&vars(&[("CUSTODY_ADMIN_TOKEN", "s3cret"), ("CUSTODY_JWT_LEEWAY_SECS", "-1")])).unwrap_err();
    assert!(!err.to_string().contains("s3cret"));
}

/// Every declared range is enforced at both ends, whichever place the value comes from.
#[test]
fn every_range_is_enforced_at_both_ends() {
    let dir = tempfile::tempdir().unwrap();
    for setting in SETTINGS {
        let Some((lo, hi)) = setting.range else { continue };
        for (value, accepted) in [(lo, true), (hi, true), (lo - 1, false), (hi + 1, false)] {
            let text = value.to_string();
            let from_env = Config::from_vars(&vars(&[(setting.env, &text)]));
            assert_eq!(from_env.is_ok(), accepted, "{} = {value}", setting.env);
            if let Err(err) = from_env {
                assert!(err.to_string().starts_with(&format!("{}: ", setting.env)), "{err}");
            }
            if value >= 0 {
                let from_file = Config::from_vars(&with_file(&dir, &format!("{} = {value}\n", setting.file_key), &[]));
                assert_eq!(from_file.is_ok(), accepted, "{} = {value} in the file", setting.file_key);
            }
        }
    }
}

#[test]
fn each_variable_is_its_file_key_in_upper_case() {
    for setting in SETTINGS {
        assert_eq!(setting.env, format!("CUSTODY_{}", setting.file_key.to_uppercase()));
        assert!(KNOWN_VARIABLES.contains(&setting.env));
    }
    assert!(KNOWN_VARIABLES.contains(&CONFIG_FILE_VARIABLE));
}

/// A file of the repository, by its path from the root.
fn repository_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap()
}

/// docs/configuration.md's table of settings, as the declaration says it should read.
fn reference_table() -> String {
    let mut table = String::from("| variable | default | meaning |\n|---|---|---|\n");
    table.push_str(&format!(
        "| `{CONFIG_FILE_VARIABLE}` | none | Path of a TOML file with any of the settings below. |\n"
    ));
    for setting in SETTINGS {
        let meaning: Vec<&str> = setting.meaning.iter().map(|line| line.trim()).filter(|l| !l.is_empty()).collect();
        table.push_str(&format!("| `{}` | {} | {} |\n", setting.env, setting.default, meaning.join(" ")));
    }
    table
}

/// The table in docs/configuration.md is generated from the declaration: a setting missing from
/// it, or documented differently from its row, fails here with the table to paste.
#[test]
fn the_docs_table_is_the_declaration() {
    let documented: String = repository_file("docs/configuration.md")
        .lines()
        .skip_while(|line| !line.starts_with("| variable |"))
        .take_while(|line| line.starts_with('|'))
        .map(|line| format!("{line}\n"))
        .collect();
    let expected = reference_table();
    assert!(
        documented == expected,
        "docs/configuration.md's table differs from the settings! declaration in \
         crates/server/src/config/mod.rs; it should read:\n\n{expected}"
    );
}

#[test]
fn every_range_is_stated_in_its_meaning() {
    for setting in SETTINGS {
        let Some((lo, hi)) = setting.range else { continue };
        let meaning = setting.meaning.join(" ");
        assert!(meaning.contains(&format!("({lo}–{hi}")), "{}: the meaning should state ({lo}–{hi}", setting.env);
    }
}

/// The packaged /etc/custody/custody.toml shows settings commented out; each one, uncommented,
/// must be a key the server takes with a value it accepts.
#[test]
fn the_packaged_example_file_is_valid_once_uncommented() {
    let settings: String = repository_file("packaging/custody.toml")
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| line.split_once(" = ").is_some_and(|(key, _)| !key.contains(' ')))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(settings.lines().count() > 10, "{settings}");
    let dir = tempfile::tempdir().unwrap();
    if let Err(err) = Config::from_vars(&with_file(&dir, &settings, &[])) {
        panic!("{err}\n{settings}");
    }
}
