//! `cargo xtask bench`: the token hand-out (`POST /v1/token`) over real HTTP on loopback, Custody
//! side by side with the reference pipeline, against the four targets of issue 6.
//!
//! What one invocation does, in order:
//!
//! 1. Builds the release `custody` binary, and the reference pipeline (`perfbench`, from
//!    `--reference PATH`, else `CUSTODY_PERF_REFERENCE`, else
//!    `<workspace>/../shared/perf-reference`; the folder or its `perfbench/`): its sources are
//!    copied into `<temp dir>/custody-perf-reference/perfbench`, outside the workspace, rewriting
//!    only files whose content changed so its release build is reused, and built there with
//!    `cargo build --release` (its own `Cargo.lock` and `target/`).
//! 2. Starts an in-process development identity provider (RS256) and a Custody on a fresh SQLite
//!    database in a temporary data directory; seeds through the admin API an app with that IdP, a
//!    `github` provider and one imported grant for each of `--users` users (`user-<n>`, access
//!    token `gho_bench_<n>`); stops it with SIGTERM and copies its data directory three times:
//!    - `sqlite_fresh`: served with `CUSTODY_TOKEN_CACHE_MB=0` (no verified-token cache: every
//!      request verifies its RS256 signature);
//!    - `sqlite_cached`: served with the default cache;
//!    - `sqlite_large_cached`: first grown to `--large-users` users (1,000,000) by writing the
//!      missing users, grants, sealed credentials and `grant.import` audit rows straight into the
//!      SQLite file with `custody_store::bulk` (the store's own row conversions; ids from the
//!      server's random source; credentials sealed by the same key ring, bound to their grant;
//!      one transaction; see `bulk.rs` for the load-only SQLite settings). No `ANALYZE` or
//!      `PRAGMA optimize` follows, since the server runs neither. Served with the default cache,
//!      after hand-outs for users at the start, the seam, the middle and the end of the range
//!      are checked (status and token value).
//! 3. When PostgreSQL is reachable (`CUSTODY_BENCH_POSTGRES_URL`, default
//!    `postgres://postgres@127.0.0.1:5432/postgres`; `--no-postgres` skips it): a fresh database,
//!    a Custody on it with the default pool size (4 connections per CPU, 16 to 64; see
//!    `custody_store::default_max_connections`) and the default cache, seeded through the API
//!    like SQLite (`postgres_cached`); the database is dropped at the end.
//! 4. Starts the reference, `perfbench server <--reference-threads, 2> <port> full-josekit` in
//!    its folder: a minimal hyper server that verifies the RS256 bearer token with josekit (no
//!    cache), reads the grant from SQLite and opens it with AES-256-GCM. It rebuilds its own
//!    100,000-user `server.db` and 2,000 tokens on every start (a few seconds).
//! 5. Drives every server with `wrk -t1 -c<--connections> -d<--seconds>s --latency` (Debian
//!    package `wrk`): Custody with a Lua script rotating over `--tokens` pre-minted RS256 user
//!    tokens (a different user on consecutive requests; for the large store the users are spread
//!    evenly over the whole range), the reference with its own `rotate.lua` over its tokens.
//!    Each server first answers one request checked by hand, then gets a 2 s warm-up. Then
//!    `--repetitions` rounds: each round runs every configuration once, in the order reference,
//!    `sqlite_fresh`, `sqlite_cached`, `sqlite_large_cached`, `postgres_cached` (all servers stay
//!    up, idle while another is measured), so background noise lands on all of them alike. Per
//!    run: hand-outs per second, p50/p99 latency, the server process's CPU time per hand-out
//!    (from `/proc/<pid>/stat`; for PostgreSQL, Custody's CPU only, not the database's), the
//!    database calls per hand-out (Custody's `custody_database_calls_total` from `/metrics`
//!    before and after the run, over the requests wrk counted: every statement, `BEGIN` and
//!    `COMMIT` included; on PostgreSQL each is a round trip) and the server's memory after the
//!    run (`VmHWM`, the peak since it started, `VmRSS` and `RssAnon` from `/proc/<pid>/status`;
//!    for SQLite `VmRSS` includes the touched pages of the memory-mapped database, which is
//!    what grows with the 1,000,000-user store). Any non-2xx answer fails the benchmark, with
//!    one request's answer in the error.
//! 6. Prints each configuration's medians (database calls per hand-out included), its memory in
//!    MiB after the last round, and the four ratios, each a ratio of medians (the
//!    paired per-round ratios are shown too), with its target and PASS or MISS:
//!    1. `sqlite_fresh` / `reference` hand-outs/s ≥ 0.8;
//!    2. `sqlite_cached` / `reference` hand-outs/s ≥ 1.3;
//!    3. `postgres_cached` / `sqlite_cached` hand-outs/s ≥ 0.6;
//!    4. p50 of `sqlite_large_cached` / p50 of `sqlite_cached` in [0.8, 1.2]: the large store's
//!       median latency within 20% of the `--users` store's, either way.
//!
//!    A ratio whose configurations were not measured is SKIPPED. A MISS is reported, not an
//!    error: the exit status is 0 unless something failed.
//! 7. Unless `--no-deletion`: the deletion-webhook benchmark (issue 4), the ignored test
//!    `deletion_benchmark_full` run in a release build.
//!
//! Everything (settings, every run, medians, ratios with their per-round values, the large
//! store's load time and size, the deletion figures, the wall time) goes to
//! `target/bench/handout.json`; the table goes to stdout, progress to stderr.
//!
//! Defaults: 1,000 and 1,000,000 users, 2,000 tokens, 50 connections, 3 rounds of 10 s: about
//! 4½ minutes on the 2-vCPU development machine once both binaries are built, 1½ of them
//! loading the large store. `--quick` is a smoke run: 200 users, 400 tokens, 1 round of 3 s, and
//! no large store unless `--million` (or `--large-users N`) asks for it (then about 2 minutes).
//! `--no-million` skips the large store in a full run; `--no-reference` skips the reference;
//! `--perf` records a `perf` profile of every server during the first round.

use custody_identity::audit::AuditEntry;
use custody_identity::ports::Random as _;
use custody_identity::{AppId, Secret, UnixTime, User, UserId, UserStatus};
use custody_providers::crypto::KeyRing;
use custody_providers::OsRandom;
use custody_store::bulk::ImportedGrant;
use custody_tests::fake_idp::{Alg, FakeIdp};
use custody_vault::grant::{Credential, Grant, GrantId, GrantStatus, TokenKind};
use custody_vault::{Cipher as _, ProviderName};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "bench-admin-token-0123456789abcdef";
const MASTER_KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Lifetime of the imported access tokens (far beyond the benchmark: no refresh happens).
const TOKEN_LIFETIME_SECS: i64 = 86_400 * 30;
/// PostgreSQL pool size for target 3: the server's default, sized to this machine (the bench
/// sets no `CUSTODY_DATABASE_MAX_CONNECTIONS`, so it measures what a deployment gets).
fn pg_connections() -> usize {
    custody_store::default_max_connections(custody_store::Backend::Postgres)
}
/// The reference's mode (`full-josekit`: the same JWT library as Custody).
const REFERENCE_MODE: &str = "full-josekit";

/// Options of one benchmark invocation.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Users in the ordinary stores (SQLite and PostgreSQL).
    pub users: usize,
    /// Users in the large SQLite store (target 4); `None` skips it.
    pub large_users: Option<usize>,
    pub tokens: usize,
    pub connections: usize,
    pub seconds: u64,
    pub repetitions: usize,
    pub postgres_url: Option<String>,
    /// The reference pipeline's sources (`perfbench`, or the folder holding it); `None` skips it.
    pub reference: Option<PathBuf>,
    /// Worker threads of the reference server.
    pub reference_threads: usize,
    /// Record a `perf` profile of each server during the first round.
    pub perf: bool,
    /// Skip the deletion-webhook benchmark.
    pub skip_deletion: bool,
}

/// The default size of the large store.
const LARGE_USERS: usize = 1_000_000;

impl BenchOptions {
    pub fn parse(args: &[String]) -> Result<BenchOptions, String> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut o = BenchOptions {
            users: if quick { 200 } else { 1000 },
            large_users: if quick { None } else { Some(LARGE_USERS) },
            tokens: if quick { 400 } else { 2000 },
            connections: 50,
            seconds: if quick { 3 } else { 10 },
            repetitions: if quick { 1 } else { 3 },
            perf: false,
            skip_deletion: false,
            postgres_url: Some(
                std::env::var("CUSTODY_BENCH_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
            ),
            reference: Some(match std::env::var("CUSTODY_PERF_REFERENCE") {
                Ok(p) if !p.is_empty() => PathBuf::from(p),
                _ => workspace_root().join("..").join("shared").join("perf-reference"),
            }),
            reference_threads: 2,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
            let number = |v: String| v.parse::<usize>().map_err(|_| format!("{flag}: expected a number"));
            match flag.as_str() {
                "--quick" => {}
                "--users" => o.users = number(value()?)?,
                "--large-users" => o.large_users = Some(number(value()?)?),
                "--million" => o.large_users = Some(o.large_users.unwrap_or(LARGE_USERS)),
                "--no-million" => o.large_users = None,
                "--tokens" => o.tokens = number(value()?)?,
                "--connections" => o.connections = number(value()?)?,
                "--seconds" => o.seconds = number(value()?)? as u64,
                "--repetitions" => o.repetitions = number(value()?)?,
                "--reference" => o.reference = Some(PathBuf::from(value()?)),
                "--reference-threads" => o.reference_threads = number(value()?)?,
                "--no-reference" => o.reference = None,
                "--no-postgres" => o.postgres_url = None,
                "--perf" => o.perf = true,
                "--no-deletion" => o.skip_deletion = true,
                other => return Err(format!("unknown bench option `{other}`")),
            }
        }
        if o.users == 0 || o.tokens == 0 || o.connections == 0 || o.seconds == 0 || o.repetitions == 0 {
            return Err("--users, --tokens, --connections, --seconds and --repetitions must be positive".into());
        }
        if o.large_users.is_some_and(|n| n <= o.users) {
            return Err(format!("--large-users must exceed --users ({})", o.users));
        }
        Ok(o)
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Total user+system CPU ticks of a process.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).ok_or("no utime")?;
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).ok_or("no stime")?;
    Ok(utime + stime)
}

fn ticks_per_second() -> f64 {
    // USER_HZ is 100 on every Linux this runs on; `getconf CLK_TCK` confirms it when available.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn now() -> UnixTime {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    UnixTime(i64::try_from(secs).unwrap_or(0))
}

/// `1234567` as `1,234,567`.
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ----- servers -----

/// A running server process, killed on drop, with the data directory it owns (if any).
struct Server {
    child: Child,
    base: String,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for a graceful exit (Custody checkpoints and closes its database).
    /// The data directory stays until the server is dropped.
    fn stop_gracefully(&mut self) -> Result<(), String> {
        let pid = self.pid().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().map_err(|e| format!("kill -TERM {pid}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().map_err(|e| e.to_string())?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("the server did not stop within 20 s of SIGTERM".into())
    }

    /// Waits until `GET <base><path>` answers (with `success` required or any status).
    async fn wait_ready(&mut self, path: &str, success: bool, timeout: Duration) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}{path}", self.base)).send().await {
                if !success || r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("the server exited while starting ({status})"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("the server did not become ready within {} s", timeout.as_secs()))
    }
}

/// Starts the release server on `dir` (its data directory) and, when given, a database URL
/// (default: `custody.db` in `dir`), with extra environment variables.
async fn start_custody(
    binary: &Path,
    dir: tempfile::TempDir,
    database_url: Option<&str>,
    extra_env: &[(&str, String)],
) -> Result<Server, String> {
    let port = free_port()?;
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CUSTODY_LISTEN", format!("127.0.0.1:{port}"))
        .env("CUSTODY_DATA_DIR", dir.path())
        .env("CUSTODY_ADMIN_TOKEN", ADMIN)
        .env("CUSTODY_MASTER_KEYS", MASTER_KEYS)
        .env("CUSTODY_ALLOW_INSECURE_ISSUERS", "true")
        .env("CUSTODY_LOG", "warn")
        .env(
            "CUSTODY_DATABASE_URL",
            database_url
                .map(str::to_owned)
                .unwrap_or_else(|| format!("sqlite://{}", sqlite_file(dir.path()).display())),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (name, value) in extra_env {
        cmd.env(name, value);
    }
    let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let mut server = Server { child, base: format!("http://127.0.0.1:{port}"), _dir: Some(dir) };
    server.wait_ready("/readyz", true, Duration::from_secs(60)).await?;
    Ok(server)
}

fn sqlite_file(dir: &Path) -> PathBuf {
    dir.join("custody.db")
}

/// A new temporary directory holding a copy of every file in `from` (a stopped server's data).
fn copy_data_dir(from: &Path) -> Result<tempfile::TempDir, String> {
    let to = tempfile::tempdir().map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(from).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        if entry.file_type().map_err(|e| e.to_string())?.is_file() {
            std::fs::copy(entry.path(), to.path().join(entry.file_name())).map_err(|e| e.to_string())?;
        }
    }
    Ok(to)
}

// ----- seeding through the API -----

async fn post(client: &reqwest::Client, url: &str, bearer: &str, body: Value) -> Result<Value, String> {
    let r = client.post(url).bearer_auth(bearer).json(&body).send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(format!("POST {url}: {status} {v}"));
    }
    Ok(v)
}

/// The app the seeding created.
#[derive(Debug, Clone)]
struct Seeded {
    app_id: String,
    api_key: String,
}

/// The access token imported for user number `n`.
fn access_token_of(n: usize) -> String {
    format!("gho_bench_{n}")
}

fn subject_of(n: usize) -> String {
    format!("user-{n}")
}

/// Seeds an app with the IdP, a provider and a grant per user, through the admin API.
async fn seed(server: &Server, idp: &FakeIdp, users: usize) -> Result<Seeded, String> {
    let client = reqwest::Client::new();
    let base = &server.base;
    let app = post(&client, &format!("{base}/v1/apps"), ADMIN, json!({"name": "bench"})).await?;
    let app_id = app["id"].as_str().ok_or("no app id")?.to_owned();
    let api_key = app["api_key"].as_str().ok_or("no api key")?.to_owned();
    post(
        &client,
        &format!("{base}/v1/apps/{app_id}/identity-provider"),
        ADMIN,
        json!({"issuer_url": idp.issuer(), "audience": idp.audience()}),
    )
    .await?;
    let r = client
        .put(format!("{base}/v1/apps/{app_id}/providers/github"))
        .bearer_auth(ADMIN)
        .json(&json!({"preset": "github", "client_id": "bench", "client_secret": "bench-secret"}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("provider: {}", r.status()));
    }
    // Imports in parallel batches: seeding is not what is measured.
    let url = format!("{base}/v1/apps/{app_id}/grants");
    let mut pending = Vec::new();
    for u in 0..users {
        let (client, url) = (client.clone(), url.clone());
        pending.push(tokio::spawn(async move {
            post(
                &client,
                &url,
                ADMIN,
                json!({"subject": subject_of(u), "provider": "github",
                       "access_token": access_token_of(u), "expires_in": TOKEN_LIFETIME_SECS, "scopes": ["repo"]}),
            )
            .await
        }));
        if pending.len() >= 16 {
            for p in pending.drain(..) {
                p.await.map_err(|e| e.to_string())??;
            }
        }
    }
    for p in pending {
        p.await.map_err(|e| e.to_string())??;
    }
    Ok(Seeded { app_id, api_key })
}

// ----- the large store -----

/// What the import endpoint stores for user number `n` (a new subject), built with the same
/// domain constructors: `ensure_user`'s user, `save_tokens`' grant and credential (sealed with
/// the server's key ring, bound to the grant id), `grant_audit`'s `grant.import` row.
fn imported_grant(
    n: usize,
    app: &AppId,
    provider: &ProviderName,
    ring: &KeyRing,
    random: &OsRandom,
    at: UnixTime,
) -> Result<ImportedGrant, String> {
    let user_id = UserId::parse(&random.uuid()).map_err(|e| e.to_string())?;
    let grant_id = GrantId::parse(&random.uuid()).map_err(|e| e.to_string())?;
    let user = User {
        id: user_id.clone(),
        app_id: app.clone(),
        subject: subject_of(n),
        status: UserStatus::Active,
        email: None,
        name: None,
        groups: BTreeSet::new(),
        roles: BTreeSet::new(),
        created_at: at,
        last_seen_at: None,
    };
    let grant = Grant {
        id: grant_id.clone(),
        app_id: app.clone(),
        user_id: user_id.clone(),
        provider: provider.clone(),
        status: GrantStatus::Active,
        scopes: vec!["repo".into()],
        account: None,
        created_at: at,
        updated_at: at,
        last_used_at: None,
        revoked_at: None,
    };
    let access_token = ring
        .seal_secret(&Secret::new(access_token_of(n)), &Credential::aad(&grant_id, TokenKind::Access))
        .map_err(|e| e.to_string())?;
    let credential = Credential {
        grant_id: grant_id.clone(),
        access_token,
        refresh_token: None,
        token_type: "Bearer".into(),
        expires_at: Some(at.plus_seconds(TOKEN_LIFETIME_SECS)),
        version: 1,
    };
    let audit = AuditEntry {
        user_id: Some(user_id),
        grant_id: Some(grant_id.to_string()),
        provider: Some(provider.to_string()),
        ..AuditEntry::new(random.uuid(), app.clone(), at, "grant.import", "operator")
    };
    Ok(ImportedGrant { user, grant, credential, audit })
}

/// Adds users `from..to` (with their grants) to the stopped SQLite database at `db`: one thread
/// builds and seals rows, the loader writes them in one transaction. Returns the seconds taken.
async fn bulk_load(db: &Path, app_id: &str, from: usize, to: usize) -> Result<f64, String> {
    let started = Instant::now();
    let app = AppId::parse(app_id).map_err(|e| e.to_string())?;
    let provider = ProviderName::parse("github").map_err(|e| e.to_string())?;
    let ring = KeyRing::parse(MASTER_KEYS).map_err(|e| e.to_string())?;
    let db = db.to_path_buf();
    let at = now();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<ImportedGrant>>(16);
    let producer = std::thread::spawn(move || -> Result<(), String> {
        let random = OsRandom;
        let mut n = from;
        while n < to {
            let end = (n + 1000).min(to);
            let batch = (n..end)
                .map(|i| imported_grant(i, &app, &provider, &ring, &random, at))
                .collect::<Result<Vec<_>, _>>()?;
            if tx.send(batch).is_err() {
                // The loader stopped (it failed); it reports why.
                return Ok(());
            }
            n = end;
        }
        Ok(())
    });
    let loaded = tokio::task::spawn_blocking(move || {
        custody_store::bulk::load_imported_grants_sqlite(&db, rx.into_iter().flatten()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    producer.join().map_err(|_| "the row builder panicked".to_owned())??;
    if loaded != (to - from) as u64 {
        return Err(format!("bulk load wrote {loaded} grants, expected {}", to - from));
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Hands out a token for each of `users` with fresh user tokens and checks the value.
async fn check_handouts(server: &Server, idp: &FakeIdp, api_key: &str, users: &[usize]) -> Result<(), String> {
    let client = reqwest::Client::new();
    for &n in users {
        let token = idp.token_for(&subject_of(n));
        let r = client
            .post(format!("{}/v1/token", server.base))
            .bearer_auth(api_key)
            .header("X-User-Token", token)
            .json(&json!({"provider": "github"}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() || body["access_token"].as_str() != Some(access_token_of(n).as_str()) {
            return Err(format!("hand-out for {}: {status} {body}", subject_of(n)));
        }
    }
    Ok(())
}

// ----- wrk -----

/// What wrk sends a server, and one request of it to check by hand.
struct Load {
    script: PathBuf,
    probe: Probe,
}

/// One hand-out request, sent before the warm-up (it must succeed) and again after a run with
/// failures (its answer goes into the error).
#[derive(Debug, Clone)]
enum Probe {
    /// Custody: `POST /v1/token` with the app's API key and a user token.
    Custody { api_key: String, user_token: String },
    /// The reference: `GET /v1/token/github` with the user token as the bearer.
    Reference { user_token: String },
}

impl Probe {
    /// `Ok` on a 2xx answer; otherwise the status and (the start of) the body.
    async fn send(&self, base: &str) -> Result<(), String> {
        let client = reqwest::Client::new();
        let request = match self {
            Probe::Custody { api_key, user_token } => client
                .post(format!("{base}/v1/token"))
                .bearer_auth(api_key)
                .header("X-User-Token", user_token)
                .json(&json!({"provider": "github"})),
            Probe::Reference { user_token } => client.get(format!("{base}/v1/token/github")).bearer_auth(user_token),
        };
        let r = request.send().await.map_err(|e| format!("no answer: {e}"))?;
        let status = r.status();
        if status.is_success() {
            return Ok(());
        }
        let body = r.text().await.unwrap_or_default();
        Err(format!("{status} {}", body.chars().take(400).collect::<String>()))
    }
}

/// Writes the wrk script and its token file (tokens for `subjects`, in order) under `dir`.
fn write_wrk_script(dir: &Path, idp: &FakeIdp, subjects: &[usize], key: &str) -> Result<Load, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let tokens: Vec<String> = subjects
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let mut claims = idp.claims_for(&subject_of(n));
            // Long-lived and distinct, so every token in the rotation verifies and differs.
            claims["exp"] = json!(claims["exp"].as_i64().unwrap_or(0) + 3600);
            claims["jti"] = json!(format!("bench-{i}"));
            idp.sign(claims, Alg::Rs256)
        })
        .collect();
    let token_file = dir.join("tokens.txt");
    std::fs::write(&token_file, tokens.join("\n") + "\n").map_err(|e| e.to_string())?;
    let script = dir.join("handout.lua");
    std::fs::write(
        &script,
        format!(
            r#"-- Rotates over pre-minted RS256 user tokens (a different user on consecutive requests).
local reqs = {{}}
for line in io.lines("{tokens}") do
  reqs[#reqs + 1] = wrk.format("POST", "/v1/token", {{
    ["Authorization"] = "Bearer {key}",
    ["X-User-Token"] = line,
    ["Content-Type"] = "application/json"
  }}, '{{"provider":"github"}}')
end
local i = 0
request = function()
  i = i + 1
  return reqs[(i % #reqs) + 1]
end
"#,
            tokens = token_file.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let user_token = tokens.first().cloned().ok_or("no tokens")?;
    Ok(Load { script, probe: Probe::Custody { api_key: key.to_owned(), user_token } })
}

/// One wrk run's figures.
#[derive(Debug, Clone)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_handout: f64,
    requests: f64,
    non_2xx: u64,
    socket_errors: u64,
    /// Statements Custody sent to its database during the run over the hand-outs answered
    /// (`custody_database_calls_total` before and after); `None` for the reference.
    db_calls_per_handout: Option<f64>,
    /// The server's memory just after the run.
    memory: Memory,
}

/// A process's memory from `/proc/<pid>/status`, in MiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// `VmHWM`: the most resident memory since the process started.
    peak_mib: f64,
    /// `VmRSS`: resident now, file-backed pages included (for SQLite, the touched pages of its
    /// memory-mapped database, which the kernel can drop at will).
    rss_mib: f64,
    /// `RssAnon`: the part of `VmRSS` that is the process's own (heap, stacks, caches).
    anon_mib: f64,
}

impl Memory {
    fn read(pid: u32) -> Result<Memory, String> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
        let field = |name: &str| -> Result<f64, String> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .map(|kib| kib / 1024.0)
                .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
        };
        Ok(Memory { peak_mib: field("VmHWM")?, rss_mib: field("VmRSS")?, anon_mib: field("RssAnon")? })
    }

    fn json(&self) -> Value {
        json!({"peak_mib": self.peak_mib, "rss_mib": self.rss_mib, "rss_anon_mib": self.anon_mib})
    }
}

/// Custody's `custody_database_calls_total` from its `/metrics`.
async fn database_calls(base: &str) -> Result<u64, String> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?
        .text()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("custody_database_calls_total "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no custody_database_calls_total in /metrics".into())
}

impl Run {
    fn json(&self) -> Value {
        json!({"handouts_per_sec": self.rps, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
               "server_cpu_us_per_handout": self.cpu_us_per_handout, "requests": self.requests,
               "socket_errors": self.socket_errors, "db_calls_per_handout": self.db_calls_per_handout,
               "server_memory": self.memory.json()})
    }
}

fn parse_latency_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, factor) = if let Some(v) = s.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().ok().map(|n| n * factor)
}

/// The configurations, in the order each round runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Config {
    Reference,
    SqliteFresh,
    SqliteCached,
    SqliteLarge,
    Postgres,
}

impl Config {
    fn key(self) -> &'static str {
        match self {
            Config::Reference => "reference",
            Config::SqliteFresh => "sqlite_fresh",
            Config::SqliteCached => "sqlite_cached",
            Config::SqliteLarge => "sqlite_large_cached",
            Config::Postgres => "postgres_cached",
        }
    }
}

/// A server under load and what wrk sends it.
struct Target {
    config: Config,
    title: String,
    description: String,
    server: Server,
    url: String,
    script: PathBuf,
    probe: Probe,
    /// wrk's working directory (the reference's script reads `tokens.txt` relative to it).
    cwd: Option<PathBuf>,
    users: usize,
    tokens: usize,
    runs: Vec<Run>,
}

impl Target {
    fn run_wrk(&self, connections: usize, seconds: u64) -> Result<Run, String> {
        let pid = self.server.pid();
        let before = cpu_ticks(pid)?;
        let mut cmd = Command::new("wrk");
        cmd.args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", "-s"])
            .arg(&self.script)
            .arg(&self.url);
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        let out =
            cmd.output().map_err(|e| format!("cannot run wrk ({e}); install it with `apt-get install -y wrk`"))?;
        let after = cpu_ticks(pid)?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            return Err(format!("wrk failed: {}\n{text}", String::from_utf8_lossy(&out.stderr)));
        }
        let find = |prefix: &str| text.lines().find(|l| l.trim_start().starts_with(prefix)).map(str::to_owned);
        let rps: f64 = find("Requests/sec:")
            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            .ok_or_else(|| format!("wrk printed no rate:\n{text}"))?;
        let pct =
            |p: &str| find(p).and_then(|l| l.split_whitespace().nth(1).and_then(parse_latency_ms)).unwrap_or(f64::NAN);
        // `  33540 requests in 10.00s, 12.34MB read`: the count leads the line.
        let requests: f64 = text
            .lines()
            .find(|l| l.contains(" requests in "))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let non_2xx =
            find("Non-2xx").and_then(|l| l.split_whitespace().last().and_then(|v| v.parse().ok())).unwrap_or(0);
        // `  Socket errors: connect 0, read 0, write 0, timeout 0`
        let socket_errors = find("Socket errors:")
            .map(|l| {
                l.split(',').filter_map(|part| part.split_whitespace().last().and_then(|v| v.parse::<u64>().ok())).sum()
            })
            .unwrap_or(0);
        let cpu_secs = (after - before) as f64 / ticks_per_second();
        let memory = Memory::read(pid)?;
        Ok(Run {
            rps,
            p50_ms: pct("50%"),
            p99_ms: pct("99%"),
            cpu_us_per_handout: if requests > 0.0 { cpu_secs * 1e6 / requests } else { f64::NAN },
            requests,
            non_2xx,
            socket_errors,
            db_calls_per_handout: None,
            memory,
        })
    }

    /// As [`Target::run_wrk`], with Custody's database calls per hand-out over the run.
    async fn run(&self, connections: usize, seconds: u64) -> Result<Run, String> {
        let custody = self.config != Config::Reference;
        let before = if custody { Some(database_calls(&self.server.base).await?) } else { None };
        let mut run = self.run_wrk(connections, seconds)?;
        if let Some(before) = before {
            let after = database_calls(&self.server.base).await?;
            run.db_calls_per_handout = (run.requests > 0.0).then(|| after.saturating_sub(before) as f64 / run.requests);
        }
        Ok(run)
    }

    /// The median of the runs' database calls per hand-out, `None` for the reference.
    fn median_db_calls(&self) -> Option<f64> {
        let calls: Vec<f64> = self.runs.iter().filter_map(|r| r.db_calls_per_handout).collect();
        (!calls.is_empty()).then(|| median(calls))
    }

    /// The memory after the last run (the peak covers the whole process lifetime).
    fn memory(&self) -> Option<Memory> {
        self.runs.last().map(|r| r.memory)
    }

    fn median(&self, f: impl Fn(&Run) -> f64) -> f64 {
        median(self.runs.iter().map(f).collect())
    }

    fn json(&self) -> Value {
        json!({
            "configuration": self.config.key(),
            "title": self.title,
            "description": self.description,
            "users": self.users,
            "tokens": self.tokens,
            "runs": self.runs.iter().map(Run::json).collect::<Vec<_>>(),
            "median": {
                "handouts_per_sec": self.median(|r| r.rps),
                "p50_ms": self.median(|r| r.p50_ms),
                "p99_ms": self.median(|r| r.p99_ms),
                "server_cpu_us_per_handout": self.median(|r| r.cpu_us_per_handout),
                "db_calls_per_handout": self.median_db_calls(),
            },
            "server_memory_after_last_run": self.memory().map(|m| m.json()),
        })
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Starts `perf record` on `pid` for about `seconds`.
fn start_perf(pid: u32, seconds: u64, data: &Path) -> Result<Child, String> {
    Command::new("perf")
        .args(["record", "-F", "999", "--call-graph", "dwarf,16384", "-o"])
        .arg(data)
        .args(["-p", &pid.to_string(), "--", "sleep", &seconds.saturating_sub(1).max(1).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run perf ({e}); apt-get install -y linux-perf"))
}

/// The cost of one RS256 signature verification with josekit, in microseconds.
fn rs256_verify_cost_us(idp: &FakeIdp) -> Result<f64, String> {
    use josekit::jws::RS256;
    let token = idp.sign(idp.claims_for("cost"), Alg::Rs256);
    let jwk = idp.public_jwk(Alg::Rs256);
    let verifier = RS256.verifier_from_jwk(&jwk).map_err(|e| e.to_string())?;
    let n = 2000;
    let start = Instant::now();
    for _ in 0..n {
        josekit::jwt::decode_with_verifier(&token, &verifier).map_err(|e| e.to_string())?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / n as f64)
}

// ----- PostgreSQL -----

/// Creates a fresh PostgreSQL database for the run, or `None` when PostgreSQL is unreachable.
async fn postgres_database(admin_url: &str) -> Option<(String, String)> {
    let name = format!("custody_bench_{}", std::process::id());
    let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(conn);
    client.execute(&format!("DROP DATABASE IF EXISTS {name}"), &[]).await.ok()?;
    client.execute(&format!("CREATE DATABASE {name}"), &[]).await.ok()?;
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => return None,
    };
    Some((url, name))
}

async fn drop_postgres_database(admin_url: &str, name: &str) {
    if let Ok((client, conn)) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = client.execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), &[]).await;
    }
}

// ----- builds -----

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn build_release() -> Result<PathBuf, String> {
    let root = workspace_root();
    eprintln!("building the release server…");
    let status = Command::new(cargo())
        .args(["build", "--release", "-p", "custody-server"])
        .current_dir(&root)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("cargo build --release -p custody-server failed".into());
    }
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    Ok(target.join("release").join("custody"))
}

/// The reference's `perfbench` folder: `path` itself or `path/perfbench`.
fn reference_sources(path: &Path) -> Result<PathBuf, String> {
    for candidate in [path.join("perfbench"), path.to_path_buf()] {
        if candidate.join("Cargo.toml").is_file() && candidate.join("rotate.lua").is_file() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "no reference pipeline at {} (expected perfbench/ with Cargo.toml and rotate.lua); \
         pass --reference PATH, set CUSTODY_PERF_REFERENCE, or --no-reference",
        path.display()
    ))
}

/// Copies `from` into `to`, rewriting only files whose content differs (so cargo's fingerprints
/// survive), skipping `target/` and what the reference generates at run time.
fn sync_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if name_str == "target" || name_str.starts_with("server.db") || name_str.starts_with("bench.db") {
            continue;
        }
        if name_str == "tokens.txt" || name_str.ends_with(".err") {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            sync_dir(&src, &dst)?;
        } else {
            let content = std::fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
            if std::fs::read(&dst).ok().as_deref() != Some(content.as_slice()) {
                std::fs::write(&dst, &content).map_err(|e| format!("{}: {e}", dst.display()))?;
            }
        }
    }
    Ok(())
}

/// Copies the reference outside the workspace and builds it; returns its folder (with
/// `target/release/perfbench` in it).
fn prepare_reference(path: &Path) -> Result<PathBuf, String> {
    let sources = reference_sources(path)?;
    let dir = std::env::temp_dir().join("custody-perf-reference").join("perfbench");
    sync_dir(&sources, &dir)?;
    eprintln!("building the reference pipeline in {}…", dir.display());
    // Its compiler warnings are not ours: shown only when the build fails.
    let out = Command::new(cargo())
        .args(["build", "--release", "--target-dir", "target"])
        .current_dir(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "cargo build --release of the reference failed in {}:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(dir)
}

/// Starts `perfbench server <threads> <port> full-josekit` in `dir` (it writes `server.db` and
/// `tokens.txt` there first); returns it with a request of its own to check.
async fn start_reference(dir: &Path, threads: usize) -> Result<(Server, Probe), String> {
    let port = free_port()?;
    let started = Instant::now();
    let err_log = std::fs::File::create(dir.join("server.err")).map_err(|e| e.to_string())?;
    let child = Command::new(dir.join("target").join("release").join("perfbench"))
        .args(["server", &threads.to_string(), &port.to_string(), REFERENCE_MODE])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(err_log)
        .spawn()
        .map_err(|e| format!("cannot start the reference: {e}"))?;
    let mut server = Server { child, base: format!("http://127.0.0.1:{port}"), _dir: None };
    // Any answer (401 without a token) means it listens; building its database comes first.
    server.wait_ready("/", false, Duration::from_secs(300)).await?;
    let user_token = std::fs::read_to_string(dir.join("tokens.txt"))
        .map_err(|e| e.to_string())?
        .lines()
        .next()
        .map(str::to_owned)
        .ok_or("the reference wrote no tokens")?;
    eprintln!(
        "[reference] ready in {:.1} s (it rebuilds its 100,000-user database on start)",
        started.elapsed().as_secs_f64()
    );
    Ok((server, Probe::Reference { user_token }))
}

// ----- ratios -----

#[derive(Debug, Clone, Copy)]
enum Metric {
    Rate,
    P50,
}

#[derive(Debug, Clone, Copy)]
enum Rule {
    AtLeast(f64),
    Within(f64, f64),
}

impl Rule {
    fn holds(self, v: f64) -> bool {
        match self {
            Rule::AtLeast(min) => v >= min,
            Rule::Within(lo, hi) => (lo..=hi).contains(&v),
        }
    }

    fn text(self) -> String {
        match self {
            Rule::AtLeast(min) => format!("≥ {min:.2}"),
            Rule::Within(lo, hi) => format!("in [{lo:.2}, {hi:.2}]"),
        }
    }
}

struct RatioSpec {
    id: u8,
    title: &'static str,
    numerator: Config,
    denominator: Config,
    metric: Metric,
    rule: Rule,
}

const RATIOS: [RatioSpec; 4] = [
    RatioSpec {
        id: 1,
        title: "fresh RS256 token per request, SQLite: Custody / reference hand-outs/s",
        numerator: Config::SqliteFresh,
        denominator: Config::Reference,
        metric: Metric::Rate,
        rule: Rule::AtLeast(0.8),
    },
    RatioSpec {
        id: 2,
        title: "same token again (cache warm), SQLite: Custody / reference hand-outs/s",
        numerator: Config::SqliteCached,
        denominator: Config::Reference,
        metric: Metric::Rate,
        rule: Rule::AtLeast(1.3),
    },
    RatioSpec {
        id: 3,
        title: "PostgreSQL (16 connections) / SQLite hand-outs/s, Custody cached",
        numerator: Config::Postgres,
        denominator: Config::SqliteCached,
        metric: Metric::Rate,
        rule: Rule::AtLeast(0.6),
    },
    RatioSpec {
        id: 4,
        title: "p50 latency, large / small store, SQLite cached",
        numerator: Config::SqliteLarge,
        denominator: Config::SqliteCached,
        metric: Metric::P50,
        rule: Rule::Within(0.8, 1.2),
    },
];

/// One ratio's outcome: `None` value when a side was not measured.
struct RatioResult {
    spec: &'static RatioSpec,
    value: Option<f64>,
    per_round: Vec<f64>,
    note: String,
}

fn ratios(targets: &[Target]) -> Vec<RatioResult> {
    let find = |c: Config| targets.iter().find(|t| t.config == c);
    RATIOS
        .iter()
        .map(|spec| {
            let pick = |r: &Run| match spec.metric {
                Metric::Rate => r.rps,
                Metric::P50 => r.p50_ms,
            };
            match (find(spec.numerator), find(spec.denominator)) {
                (Some(n), Some(d)) => RatioResult {
                    spec,
                    value: Some(n.median(pick) / d.median(pick)),
                    per_round: n.runs.iter().zip(&d.runs).map(|(a, b)| pick(a) / pick(b)).collect(),
                    note: format!("{} {} users / {} {} users", n.config.key(), n.users, d.config.key(), d.users),
                },
                (n, d) => RatioResult {
                    spec,
                    value: None,
                    per_round: Vec::new(),
                    note: format!(
                        "skipped: not measured: {}",
                        [(n.is_none(), spec.numerator), (d.is_none(), spec.denominator)]
                            .iter()
                            .filter(|(missing, _)| *missing)
                            .map(|(_, c)| c.key())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
            }
        })
        .collect()
}

fn ratio_json(r: &RatioResult) -> Value {
    json!({
        "id": r.spec.id,
        "title": r.spec.title,
        "numerator": r.spec.numerator.key(),
        "denominator": r.spec.denominator.key(),
        "metric": match r.spec.metric { Metric::Rate => "handouts_per_sec", Metric::P50 => "p50_ms" },
        "value": r.value,
        "per_round": r.per_round,
        "target": r.spec.rule.text(),
        "pass": r.value.map(|v| r.spec.rule.holds(v)),
        "note": r.note,
    })
}

fn table(targets: &[Target], ratios: &[RatioResult], options: &BenchOptions) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "\nPOST /v1/token hand-outs, wrk -t1 -c{} -d{}s, medians of {} round(s)\n\n",
        options.connections, options.seconds, options.repetitions
    ));
    out.push_str(&format!(
        "{:<44} {:>10} {:>13} {:>9} {:>9} {:>12} {:>11} {:>9} {:>8}\n",
        "configuration",
        "users",
        "hand-outs/s",
        "p50 ms",
        "p99 ms",
        "CPU µs/h-o",
        "DB calls/h-o",
        "peak MiB",
        "RSS MiB"
    ));
    for t in targets {
        let calls = t.median_db_calls().map_or("-".to_owned(), |c| format!("{c:.2}"));
        let (peak, rss) = t
            .memory()
            .map_or(("-".to_owned(), "-".to_owned()), |m| (format!("{:.0}", m.peak_mib), format!("{:.0}", m.rss_mib)));
        out.push_str(&format!(
            "{:<44} {:>10} {:>13} {:>9.2} {:>9.2} {:>12.1} {:>11} {:>9} {:>8}\n",
            t.title,
            thousands(t.users as f64),
            thousands(t.median(|r| r.rps)),
            t.median(|r| r.p50_ms),
            t.median(|r| r.p99_ms),
            t.median(|r| r.cpu_us_per_handout),
            calls,
            peak,
            rss,
        ));
    }
    out.push_str(
        "\nDB calls/h-o: statements sent to the database per hand-out (custody_database_calls_total), BEGIN\n\
         and COMMIT included; audit rows are written in batches, so one batch's statements serve many\n\
         hand-outs. Memory: the server's VmHWM (peak) and VmRSS after the last round, in MiB.\n",
    );
    out.push('\n');
    for r in ratios {
        let per_round = r.per_round.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(", ");
        match r.value {
            Some(v) => out.push_str(&format!(
                "{}. {:<72} {:>5.2}  target {:<14} {}\n     ({}; per round: {})\n",
                r.spec.id,
                r.spec.title,
                v,
                r.spec.rule.text(),
                if r.spec.rule.holds(v) { "PASS" } else { "MISS" },
                r.note,
                per_round
            )),
            None => out.push_str(&format!(
                "{}. {:<72}   n/a  target {:<14} SKIPPED\n     ({})\n",
                r.spec.id,
                r.spec.title,
                r.spec.rule.text(),
                r.note
            )),
        }
    }
    out.push_str(
        "   Ratios are of the medians. Target 4 passes when p50(large)/p50(small) lies in [0.80, 1.20],\n   \
         i.e. the large store's median latency is within 20% of the small one's, either way.\n",
    );
    out
}

// ----- the deletion webhook -----

/// The deletion-webhook benchmark (issue 4): a user holding 1,000 grants is deleted by a
/// webhook; the time from sending it to its 200. Runs the ignored benchmark test of the webhook
/// suite in a release build and reads the durations it prints.
fn deletion_webhook(postgres_url: Option<&str>) -> Result<Value, String> {
    let mut cmd = Command::new(cargo());
    cmd.args([
        "test",
        "--release",
        "-p",
        "custody-tests",
        "--test",
        "webhooks_http",
        "deletion_benchmark_full",
        "--",
        "--ignored",
        "--nocapture",
    ])
    .current_dir(workspace_root());
    match postgres_url {
        Some(url) => cmd.env("CUSTODY_TEST_POSTGRES_URL", url),
        None => cmd.env_remove("CUSTODY_TEST_POSTGRES_URL"),
    };
    eprintln!("running the deletion-webhook benchmark (release build)…");
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("the deletion benchmark failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut results = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("deletion webhook")) {
        // `deletion webhook, 1000 grants, sqlite: [37.4ms, 30.8ms, 32.5ms]`
        let Some((head, list)) = line.split_once(": [") else { continue };
        let backend = head.rsplit(", ").next().unwrap_or("?").to_owned();
        let ms: Vec<f64> = list.trim_end_matches(']').split(", ").filter_map(parse_duration_ms).collect();
        eprintln!("[{backend}] deletion webhook for a user with 1,000 grants: {ms:.1?} ms");
        results.push(json!({"backend": backend, "grants": 1000, "runs_ms": ms, "median_ms": median(ms.clone())}));
    }
    Ok(Value::Array(results))
}

/// A `Duration`'s `Debug` text (`37.412ms`, `1.2s`, `850µs`) in milliseconds.
fn parse_duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    for (suffix, factor) in [("ms", 1.0), ("µs", 0.001), ("us", 0.001), ("ns", 0.000_001), ("s", 1000.0)] {
        if let Some(v) = s.strip_suffix(suffix) {
            return v.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    None
}

// ----- the whole benchmark -----

/// Starts and seeds every configuration. The PostgreSQL database, once created, is returned in
/// `postgres` even when a later step fails, so the caller can drop it.
async fn setup(
    options: &BenchOptions,
    binary: &Path,
    reference_dir: Option<&Path>,
    idp: &FakeIdp,
    out_dir: &Path,
    postgres: &mut Option<(String, String)>,
) -> Result<(Vec<Target>, Value), String> {
    let mut targets = Vec::new();
    let custody_target = |config: Config, title: String, description: &str, server: Server, load: Load| Target {
        config,
        title,
        description: description.to_owned(),
        url: format!("{}/v1/token", server.base),
        server,
        script: load.script,
        probe: load.probe,
        cwd: None,
        users: options.users,
        tokens: options.tokens,
        runs: Vec::new(),
    };
    let small_subjects: Vec<usize> = (0..options.tokens).map(|i| i % options.users).collect();

    // SQLite: seeded once through the API, then copied for each configuration.
    let seed_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let seed_path = seed_dir.path().to_path_buf();
    let seeder = start_custody(binary, seed_dir, None, &[]).await?;
    let started = Instant::now();
    let seeded = seed(&seeder, idp, options.users).await?;
    eprintln!(
        "[sqlite] seeded {} users with grants through the API in {:.1} s",
        options.users,
        started.elapsed().as_secs_f64()
    );
    // Stopped gracefully, its database is complete in `custody.db`; then copied three times.
    let mut seeder = seeder;
    seeder.stop_gracefully()?;
    let (fresh_dir, cached_dir, large_dir) =
        (copy_data_dir(&seed_path)?, copy_data_dir(&seed_path)?, copy_data_dir(&seed_path)?);
    drop(seeder);
    let sqlite_load = || write_wrk_script(&out_dir.join("sqlite"), idp, &small_subjects, &seeded.api_key);

    let fresh = start_custody(binary, fresh_dir, None, &[("CUSTODY_TOKEN_CACHE_MB", "0".into())]).await?;
    targets.push(custody_target(
        Config::SqliteFresh,
        "custody sqlite, fresh token (cache off)".into(),
        "Custody on SQLite with CUSTODY_TOKEN_CACHE_MB=0: every request verifies its RS256 token",
        fresh,
        sqlite_load()?,
    ));
    let cached = start_custody(binary, cached_dir, None, &[]).await?;
    targets.push(custody_target(
        Config::SqliteCached,
        "custody sqlite, cached".into(),
        "Custody on SQLite, default verified-token cache (warm: the tokens repeat)",
        cached,
        sqlite_load()?,
    ));

    let mut large_load = Value::Null;
    if let Some(large) = options.large_users {
        eprintln!(
            "[sqlite large] writing {} more users with grants into SQLite…",
            thousands((large - options.users) as f64)
        );
        let secs = bulk_load(&sqlite_file(large_dir.path()), &seeded.app_id, options.users, large).await?;
        let size = std::fs::metadata(sqlite_file(large_dir.path())).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "[sqlite large] loaded {} users in {secs:.1} s (database {:.0} MB)",
            thousands((large - options.users) as f64),
            size as f64 / 1e6
        );
        large_load = json!({"users": large, "api_seeded": options.users, "bulk_loaded": large - options.users,
                            "seconds": secs, "database_bytes": size});
        let server = start_custody(binary, large_dir, None, &[]).await?;
        check_handouts(&server, idp, &seeded.api_key, &[0, options.users, large / 2, large - 1]).await?;
        let subjects: Vec<usize> = (0..options.tokens).map(|i| i * large / options.tokens).collect();
        let load = write_wrk_script(&out_dir.join("sqlite-large"), idp, &subjects, &seeded.api_key)?;
        let mut target = custody_target(
            Config::SqliteLarge,
            format!("custody sqlite {} users, cached", thousands(large as f64)),
            "Custody on SQLite with the large store, default cache; tokens spread over all users",
            server,
            load,
        );
        target.users = large;
        targets.push(target);
    }

    if let Some(admin_url) = &options.postgres_url {
        match postgres_database(admin_url).await {
            Some((url, name)) => {
                *postgres = Some((admin_url.clone(), name));
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let server = start_custody(binary, dir, Some(&url), &[]).await?;
                let started = Instant::now();
                let seeded = seed(&server, idp, options.users).await?;
                eprintln!(
                    "[postgres] seeded {} users with grants through the API in {:.1} s",
                    options.users,
                    started.elapsed().as_secs_f64()
                );
                let load = write_wrk_script(&out_dir.join("postgres"), idp, &small_subjects, &seeded.api_key)?;
                targets.push(custody_target(
                    Config::Postgres,
                    format!("custody postgres ({} conns), cached", pg_connections()),
                    "Custody on PostgreSQL, default pool size (sized to the machine), default cache",
                    server,
                    load,
                ));
            }
            None => eprintln!("PostgreSQL not reachable at {admin_url}; skipped"),
        }
    }

    if let Some(dir) = reference_dir {
        let (server, probe) = start_reference(dir, options.reference_threads).await?;
        targets.push(Target {
            config: Config::Reference,
            title: format!("reference ({}, {} threads)", REFERENCE_MODE, options.reference_threads),
            description: "perf-reference `perfbench server`: josekit RS256 verify, SQLite lookup, AES-256-GCM open, \
                              no cache; its own 2,000 tokens over 100,000 users"
                .into(),
            url: format!("{}/", server.base),
            server,
            script: PathBuf::from("rotate.lua"),
            probe,
            cwd: Some(dir.to_path_buf()),
            users: 100_000,
            tokens: 2000,
            runs: Vec::new(),
        });
    }
    // Each round runs the reference, then the SQLite configurations, then PostgreSQL.
    targets.sort_by_key(|t| t.config as u8);
    Ok((targets, large_load))
}

/// The error for a run with failed hand-outs, with the answer to one request sent now.
async fn failed(t: &Target, during: &str, non_2xx: u64) -> String {
    let answer = match t.probe.send(&t.server.base).await {
        Ok(()) => "succeeds".to_owned(),
        Err(e) => format!("answers {e}"),
    };
    format!("[{}] {non_2xx} hand-outs failed during {during}; one request sent now {answer}", t.config.key())
}

/// One checked request, a warm-up, then `repetitions` rounds over every target.
async fn measure(targets: &mut [Target], options: &BenchOptions, out_dir: &Path) -> Result<(), String> {
    for t in targets.iter() {
        t.probe.send(&t.server.base).await.map_err(|e| format!("[{}] the first hand-out: {e}", t.config.key()))?;
        // Warm-up: JWKS fetched, every token seen once, caches and connections filled.
        let run = t.run(options.connections, 2).await?;
        if run.non_2xx > 0 {
            return Err(failed(t, "the warm-up", run.non_2xx).await);
        }
    }
    for round in 1..=options.repetitions {
        for t in targets.iter_mut() {
            let profiler = if options.perf && round == 1 {
                let data = out_dir.join(format!("perf-{}.data", t.config.key()));
                eprintln!("[{}] profiling into {} (perf report -i … --no-children)", t.config.key(), data.display());
                Some(start_perf(t.server.pid(), options.seconds, &data)?)
            } else {
                None
            };
            let run = t.run(options.connections, options.seconds).await?;
            if let Some(mut p) = profiler {
                let _ = p.wait();
            }
            eprintln!(
                "[{}] round {round}: {} hand-outs/s, p50 {:.2} ms, p99 {:.2} ms, {:.1} µs server CPU per hand-out, \
                 {} DB calls per hand-out, {:.0} MiB peak, {:.0} MiB resident{}{}",
                t.config.key(),
                thousands(run.rps),
                run.p50_ms,
                run.p99_ms,
                run.cpu_us_per_handout,
                run.db_calls_per_handout.map_or("-".to_owned(), |c| format!("{c:.2}")),
                run.memory.peak_mib,
                run.memory.rss_mib,
                if run.non_2xx > 0 { format!(", {} non-2xx!", run.non_2xx) } else { String::new() },
                if run.socket_errors > 0 { format!(", {} socket errors", run.socket_errors) } else { String::new() },
            );
            if run.non_2xx > 0 {
                return Err(failed(t, &format!("round {round}"), run.non_2xx).await);
            }
            t.runs.push(run);
        }
    }
    Ok(())
}

/// `cargo xtask bench [--quick] [--million | --no-million] [--users N] [--large-users N]
/// [--tokens N] [--connections N] [--seconds N] [--repetitions N] [--reference PATH |
/// --no-reference] [--reference-threads N] [--no-postgres] [--perf] [--no-deletion]`.
pub async fn run(args: &[String]) -> Result<(), String> {
    let options = BenchOptions::parse(args)?;
    let wall = Instant::now();
    if Command::new("wrk").arg("--version").output().is_err() {
        return Err("wrk is needed: apt-get install -y wrk".into());
    }
    let binary = build_release()?;
    let reference_dir = options.reference.as_deref().map(prepare_reference).transpose()?;
    let out_dir = workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let idp = FakeIdp::start().await;
    let verify_us = rs256_verify_cost_us(&idp)?;
    eprintln!("one RS256 verification (josekit): {verify_us:.1} µs");

    let measured_from = Instant::now();
    let mut postgres = None;
    let measured = async {
        let (mut targets, large_load) =
            setup(&options, &binary, reference_dir.as_deref(), &idp, &out_dir, &mut postgres).await?;
        eprintln!("set up in {:.0} s; measuring…", measured_from.elapsed().as_secs_f64());
        measure(&mut targets, &options, &out_dir).await?;
        Ok::<_, String>((targets, large_load))
    }
    .await;
    let setup_and_runs = measured_from.elapsed().as_secs_f64();
    // The servers stop when `targets` drops at the end of this closure, before the PostgreSQL
    // database goes.
    let outcome = measured.map(|(targets, large_load)| {
        let ratios = ratios(&targets);
        let table = table(&targets, &ratios, &options);
        let report = json!({
            "benchmark": "POST /v1/token over HTTP on loopback, Custody and the reference pipeline, wrk -t1",
            "settings": {
                "connections": options.connections, "seconds": options.seconds, "rounds": options.repetitions,
                "users": options.users, "large_users": options.large_users, "tokens": options.tokens,
                "reference_threads": options.reference_threads, "postgres_connections": pg_connections(),
            },
            "rs256_verify_us": verify_us,
            "configurations": targets.iter().map(Target::json).collect::<Vec<_>>(),
            "ratios": ratios.iter().map(ratio_json).collect::<Vec<_>>(),
            "large_store_load": large_load,
            "setup_and_measurement_secs": setup_and_runs,
        });
        (report, table)
    });
    if let Some((admin_url, name)) = &postgres {
        drop_postgres_database(admin_url, name).await;
    }
    let (mut report, table) = outcome?;
    let path = out_dir.join("handout.json");
    let write = |report: &Value| {
        std::fs::write(&path, serde_json::to_string_pretty(report).unwrap_or_default()).map_err(|e| e.to_string())
    };
    write(&report)?;
    if !options.skip_deletion {
        let pg = match &options.postgres_url {
            Some(url) if postgres.is_some() => Some(url.as_str()),
            _ => None,
        };
        report["deletion_webhook"] = deletion_webhook(pg)?;
        write(&report)?;
    }
    report["total_wall_secs"] = json!(wall.elapsed().as_secs_f64());
    write(&report)?;
    println!("{table}");
    println!("written to {} (total {:.0} s)", path.display(), wall.elapsed().as_secs_f64());
    Ok(())
}
