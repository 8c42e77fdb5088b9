//! `cargo xtask`: developer and operator tasks that are not part of the server.
//!
//! - `migrate --database-url URL [up|down|status]`: `custody migrate` with the URL as a flag.
//! - `fixtures --database-url URL`: load a small demo data set (an app with a known API key and
//!   an identity provider); idempotent.
//! - `dev-idp [--listen ADDR]`: a local OpenID provider for trying Custody by hand (discovery,
//!   JWKS, and `GET /dev/token?sub=...` handing out signed user tokens).
//! - `bench [--quick] [...]`: the token hand-out over HTTP with wrk, Custody (SQLite with and
//!   without the token cache, a 1,000,000-user SQLite store, PostgreSQL) side by side with the
//!   reference pipeline, and the four ratios of issue 6; figures in `target/bench/handout.json`
//!   (see `bench.rs`).
//! - `demo [--listen ADDR] [--no-wait]`: the whole product on one machine, narrated step by
//!   step (see `demo.rs`).
//! - `sdk-env`: the fakes and Custody for the SDK test suites; prints one line of JSON and
//!   serves until stdin closes (see `sdk_env.rs`).
//! - `fuzz [--minutes N] [--cases N]`: the parsers' property tests, many more cases, until the
//!   time is up (see `fuzz.rs`).
//! - `ci`: the checks CI runs (format, clippy, tests).

#![allow(clippy::print_stdout)]

mod bench;
mod demo;
mod fuzz;
mod sdk_env;

use custody_identity::idp::{IdpConfig, IdpEndpoints, IdpKind};
use custody_identity::ports::SecretHasher as _;
use custody_identity::service::API_KEY_PURPOSE;
use custody_identity::{ApiKeyId, ApiKeyRecord, App, AppId, AppName, IdpId, Issuer, UnixTime};
use custody_store::prelude::*;
use custody_store::{Store, StoreOptions};
use std::process::{Command, ExitCode};

/// The demo app's id and API key loaded by `fixtures`. Public on purpose: demo data only.
pub const FIXTURE_APP_ID: &str = "00000000-0000-4000-8000-00000000d3e0";
pub const FIXTURE_API_KEY: &str = "ck_00000000000000d3_demo-api-key-for-local-development-only";
const FIXTURE_KEY_ID: &str = "00000000-0000-4000-8000-00000000d3e1";
const FIXTURE_IDP_ID: &str = "00000000-0000-4000-8000-00000000d3e2";

const USAGE: &str = "usage:
  cargo xtask migrate --database-url URL [up|down|status]
  cargo xtask fixtures --database-url URL   (master keys from CUSTODY_MASTER_KEYS or <data dir>/master-keys)
  cargo xtask dev-idp [--listen 127.0.0.1:9000]
  cargo xtask bench [--quick] [--million | --no-million] [--users N] [--large-users N] [--tokens N]
                    [--connections N] [--seconds N] [--repetitions N] [--reference PATH | --no-reference]
                    [--reference-threads N] [--no-postgres] [--perf] [--no-deletion]
  cargo xtask demo [--listen 127.0.0.1:8080] [--no-wait]
  cargo xtask sdk-env
  cargo xtask fuzz [--minutes 10] [--cases 20000]
  cargo xtask ci";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("migrate") => migrate(&args[1..]),
        Some("fixtures") => runtime().and_then(|rt| rt.block_on(fixtures(&args[1..]))),
        Some("dev-idp") => runtime().and_then(|rt| rt.block_on(dev_idp(&args[1..]))),
        Some("bench") => runtime().and_then(|rt| rt.block_on(bench::run(&args[1..]))),
        Some("demo") => runtime().and_then(|rt| rt.block_on(demo::run(&args[1..]))),
        Some("sdk-env") => runtime().and_then(|rt| rt.block_on(sdk_env::run(&args[1..]))),
        Some("ci") => ci(),
        Some("fuzz") => fuzz::run(&args[1..]),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())
}

/// `--database-url URL` (or `CUSTODY_DATABASE_URL`) and the remaining positional arguments.
fn database_url(args: &[String]) -> Result<(String, Vec<String>), String> {
    let mut url = std::env::var("CUSTODY_DATABASE_URL").ok();
    let mut rest = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--database-url" {
            url = Some(iter.next().ok_or("--database-url needs a value")?.clone());
        } else if let Some(v) = arg.strip_prefix("--database-url=") {
            url = Some(v.to_owned());
        } else {
            rest.push(arg.clone());
        }
    }
    Ok((url.ok_or("--database-url URL is required")?, rest))
}

/// A thin wrapper around `custody migrate` (the same code, in `custody_server::cli`), kept so
/// `--database-url` works as before.
fn migrate(args: &[String]) -> Result<(), String> {
    let (url, rest) = database_url(args)?;
    let action = rest.first().map(String::as_str).unwrap_or("up");
    // Before any runtime thread exists: `custody migrate` reads its settings from the environment.
    std::env::set_var("CUSTODY_DATABASE_URL", url);
    let rt = runtime()?;
    let mut streams = custody_server::cli::io::StdStreams::new();
    let code = rt.block_on(custody_server::cli::run(["custody", "migrate", action], &mut streams.io()));
    if code == 0 {
        Ok(())
    } else {
        Err(format!("custody migrate {action} failed (exit code {code})"))
    }
}

async fn fixtures(args: &[String]) -> Result<(), String> {
    let (url, _) = database_url(args)?;
    let keys = match std::env::var("CUSTODY_MASTER_KEYS") {
        Ok(k) if !k.is_empty() => k,
        _ => {
            let dir = std::env::var("CUSTODY_DATA_DIR").unwrap_or_else(|_| "./custody-data".into());
            let path = std::path::Path::new(&dir).join(custody_server::bootstrap::MASTER_KEYS_FILE);
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_owned())
                .map_err(|_| format!("set CUSTODY_MASTER_KEYS or start the server once so {} exists", path.display()))?
        }
    };
    let cipher = custody_providers::crypto::KeyRing::parse(&keys).map_err(|e| format!("CUSTODY_MASTER_KEYS: {e}"))?;
    let store = Store::connect(&url, StoreOptions::default()).await.map_err(|e| e.to_string())?;
    let hash_key = custody_server::state::instance_hash_key(&store, &cipher, &custody_providers::OsRandom)
        .await
        .map_err(|e| e.to_string())?;
    let hasher = custody_providers::crypto::HmacHasher::new(&hash_key).map_err(|e| e.to_string())?;
    let now = UnixTime(
        i64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        )
        .unwrap_or(0),
    );
    let app_id = AppId::parse(FIXTURE_APP_ID).map_err(|e| e.to_string())?;
    if store.get_app(&app_id).await.map_err(|e| e.to_string())?.is_some() {
        println!("fixtures already loaded: app {FIXTURE_APP_ID}");
        return Ok(());
    }
    let app = App { id: app_id.clone(), name: AppName::parse("Demo app").map_err(|e| e.to_string())?, created_at: now };
    let prefix = custody_identity::app::api_key_prefix(FIXTURE_API_KEY).ok_or("fixture key is malformed")?.to_owned();
    let key = ApiKeyRecord {
        id: ApiKeyId::parse(FIXTURE_KEY_ID).map_err(|e| e.to_string())?,
        app_id: app_id.clone(),
        prefix,
        hash: hasher.hash(API_KEY_PURPOSE, FIXTURE_API_KEY.as_bytes()),
        created_at: now,
        last_used_at: None,
    };
    let audit = |action: &str, id: &str| custody_identity::audit::AuditEntry {
        id: id.to_owned(),
        app_id: app_id.clone(),
        at: now,
        action: action.to_owned(),
        actor: "operator".into(),
        user_id: None,
        grant_id: None,
        provider: None,
        outcome: custody_identity::audit::AuditOutcome::Success,
        detail: Some("loaded by cargo xtask fixtures".into()),
    };
    store
        .create_app(&app, &key, &audit("app.create", "00000000-0000-4000-8000-00000000d3f0"))
        .await
        .map_err(|e| e.to_string())?;
    let issuer = "https://demo-tenant.us.auth0.com/";
    let idp = IdpConfig {
        id: IdpId::parse(FIXTURE_IDP_ID).map_err(|e| e.to_string())?,
        app_id: app_id.clone(),
        kind: IdpKind::from_static("auth0"),
        issuer: Issuer::new(issuer),
        jwks_uri: format!("{issuer}.well-known/jwks.json"),
        audience: Some("https://api.demo.example".into()),
        claims: custody_identity::ClaimMappings::subject_only(),
        claims_locked_at: None,
        version: 1,
        created_at: now,
        endpoints: IdpEndpoints {
            authorization_endpoint: Some(format!("{issuer}authorize")),
            token_endpoint: Some(format!("{issuer}oauth/token")),
            end_session_endpoint: Some(format!("{issuer}oidc/logout")),
        },
    };
    store
        .create_idp(&idp, &audit("idp.create", "00000000-0000-4000-8000-00000000d3f1"))
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "loaded fixtures:\n  app id:  {FIXTURE_APP_ID}\n  API key: {FIXTURE_API_KEY}\n  IdP:     {issuer} (auth0)"
    );
    Ok(())
}

/// The OIDC client `dev-idp` registers for a Custody at `http://127.0.0.1:8080` (development only).
const DEV_CLIENT_ID: &str = "custody-dev";
/// Its client secret (development only; printed at start).
const DEV_CLIENT_SECRET: &str = "custody-dev-secret";

async fn dev_idp(args: &[String]) -> Result<(), String> {
    let listen = match args {
        [] => "127.0.0.1:9000".to_owned(),
        [flag, addr] if flag == "--listen" => addr.clone(),
        _ => return Err(USAGE.to_owned()),
    };
    let idp = custody_tests::fake_idp::FakeIdp::start_on(&listen).await;
    // Sign-in: a client for a Custody at the default public URL (a login form takes any name).
    let custody = "http://127.0.0.1:8080";
    idp.advertise_sign_in();
    idp.register_client(
        DEV_CLIENT_ID,
        DEV_CLIENT_SECRET,
        &[&format!("{custody}/v1/auth/callback"), &format!("{custody}/wallet/auth/callback")],
        &[&format!("{custody}/wallet/sign-in")],
    );
    println!("development identity provider (not for production) at {}", idp.issuer());
    println!("  issuer:    {}", idp.issuer());
    println!("  audience:  {}", idp.audience());
    println!("  a token:   curl '{}/dev/token?sub=alice&email=alice@example.com&groups=eng'", idp.issuer());
    println!("  sign-in:   client_id `{DEV_CLIENT_ID}`, client_secret `{DEV_CLIENT_SECRET}` (for {custody})");
    println!("Ctrl-C stops it.");
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    Ok(())
}

fn ci() -> Result<(), String> {
    let run = |args: &[&str]| -> Result<(), String> {
        println!("$ cargo {}", args.join(" "));
        let status = Command::new(env_cargo()).args(args).status().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("cargo {} failed", args.join(" ")))
        }
    };
    run(&["fmt", "--all", "--", "--check"])?;
    run(&["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"])?;
    run(&["test", "--workspace"])
}

fn env_cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}
