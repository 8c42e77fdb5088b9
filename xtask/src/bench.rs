//! `cargo xtask bench`: the token hand-out (`POST /v1/token`) over real HTTP on loopback.
//!
//! It builds the release `custody` binary, starts it on a fresh SQLite database (and on a fresh
//! PostgreSQL database when one is reachable), seeds an app whose identity provider is an
//! in-process development IdP, imports a grant for each of `--users` users, and drives the
//! hand-out with `wrk` (Debian package `wrk`) rotating over pre-minted RS256 user tokens, with the
//! server's caches warm. For each run it reports hand-outs per second, p50/p99 latency and the
//! server's CPU time per hand-out (from `/proc/<pid>/stat`), next to the cost of one RS256
//! verification measured in the same process, and writes everything to
//! `target/bench/handout.json`.

use custody_tests::fake_idp::{Alg, FakeIdp};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "bench-admin-token-0123456789abcdef";
const MASTER_KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Options of one benchmark invocation.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub users: usize,
    pub tokens: usize,
    pub connections: usize,
    pub seconds: u64,
    pub repetitions: usize,
    pub postgres_url: Option<String>,
    /// Record a `perf` profile of the server during the first measured run of each backend.
    pub perf: bool,
    /// Skip the deletion-webhook benchmark.
    pub skip_deletion: bool,
}

impl BenchOptions {
    pub fn parse(args: &[String]) -> Result<BenchOptions, String> {
        let mut o = BenchOptions {
            users: 1000,
            tokens: 2000,
            connections: 50,
            seconds: 10,
            repetitions: 3,
            perf: false,
            skip_deletion: false,
            postgres_url: Some(
                std::env::var("CUSTODY_BENCH_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
            ),
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
            let number = |v: String| v.parse::<usize>().map_err(|_| format!("{flag}: expected a number"));
            match flag.as_str() {
                "--users" => o.users = number(value()?)?,
                "--tokens" => o.tokens = number(value()?)?,
                "--connections" => o.connections = number(value()?)?,
                "--seconds" => o.seconds = number(value()?)? as u64,
                "--repetitions" => o.repetitions = number(value()?)?,
                "--no-postgres" => o.postgres_url = None,
                "--perf" => o.perf = true,
                "--no-deletion" => o.skip_deletion = true,
                "--quick" => {
                    o.users = 200;
                    o.tokens = 400;
                    o.seconds = 3;
                    o.repetitions = 1;
                }
                other => return Err(format!("unknown bench option `{other}`")),
            }
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

/// A running release server, killed on drop.
struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(binary: &Path, database_url: Option<&str>) -> Result<Server, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
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
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(url) = database_url {
        cmd.env("CUSTODY_DATABASE_URL", url);
    }
    let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    let server = Server { child, base, _dir: dir };
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("{}/readyz", server.base)).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("the server did not become ready".into())
}

async fn post(client: &reqwest::Client, url: &str, bearer: &str, body: Value) -> Result<Value, String> {
    let r = client.post(url).bearer_auth(bearer).json(&body).send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(format!("POST {url}: {status} {v}"));
    }
    Ok(v)
}

/// Seeds an app with the IdP, a provider and a grant per user; returns the API key.
async fn seed(server: &Server, idp: &FakeIdp, users: usize) -> Result<String, String> {
    let client = reqwest::Client::new();
    let base = &server.base;
    let app = post(&client, &format!("{base}/v1/apps"), ADMIN, json!({"name": "bench"})).await?;
    let app_id = app["id"].as_str().ok_or("no app id")?.to_owned();
    let key = app["api_key"].as_str().ok_or("no api key")?.to_owned();
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
                json!({"subject": format!("user-{u}"), "provider": "github",
                       "access_token": format!("gho_bench_{u}"), "expires_in": 86_400 * 30, "scopes": ["repo"]}),
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
    Ok(key)
}

/// Writes the wrk script and its token file; returns the script path.
fn write_wrk_script(dir: &Path, idp: &FakeIdp, options: &BenchOptions, key: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let tokens: Vec<String> = (0..options.tokens)
        .map(|i| {
            let mut claims = idp.claims_for(&format!("user-{}", i % options.users));
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
    Ok(script)
}

/// One wrk run's figures.
#[derive(Debug, Clone)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_handout: f64,
    non_2xx: u64,
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

fn run_wrk(server: &Server, script: &Path, options: &BenchOptions, seconds: u64) -> Result<Run, String> {
    let pid = server.child.id();
    let before = cpu_ticks(pid)?;
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{}", options.connections), &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(script)
        .arg(format!("{}/v1/token", server.base))
        .output()
        .map_err(|e| format!("cannot run wrk ({e}); install it with `apt-get install -y wrk`"))?;
    let after = cpu_ticks(pid)?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let find = |prefix: &str| text.lines().find(|l| l.trim_start().starts_with(prefix)).map(str::to_owned);
    let rps: f64 = find("Requests/sec:")
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .ok_or_else(|| format!("wrk printed no rate:\n{text}"))?;
    let pct =
        |p: &str| find(p).and_then(|l| l.split_whitespace().nth(1).and_then(parse_latency_ms)).unwrap_or(f64::NAN);
    let total: f64 =
        // `  33540 requests in 10.00s, 12.34MB read`: the count leads the line.
        text.lines().find(|l| l.contains(" requests in ")).and_then(|l| l.split_whitespace().next()?.parse().ok()).unwrap_or(0.0);
    let non_2xx = find("Non-2xx").and_then(|l| l.split_whitespace().last().and_then(|v| v.parse().ok())).unwrap_or(0);
    let cpu_secs = (after - before) as f64 / ticks_per_second();
    Ok(Run {
        rps,
        p50_ms: pct("50%"),
        p99_ms: pct("99%"),
        cpu_us_per_handout: if total > 0.0 { cpu_secs * 1e6 / total } else { f64::NAN },
        non_2xx,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
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

fn build_release() -> Result<PathBuf, String> {
    let root = workspace_root();
    eprintln!("building the release server…");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
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

/// Runs the hand-out benchmark on one backend.
async fn bench_backend(
    label: &str,
    binary: &Path,
    database_url: Option<&str>,
    idp: &FakeIdp,
    options: &BenchOptions,
    out_dir: &Path,
) -> Result<Value, String> {
    let server = start_server(binary, database_url).await?;
    let seeded = Instant::now();
    let key = seed(&server, idp, options.users).await?;
    eprintln!("[{label}] seeded {} users with grants in {:.1} s", options.users, seeded.elapsed().as_secs_f64());
    let script = write_wrk_script(&out_dir.join(label), idp, options, &key)?;
    // Warm-up: every token verified once, caches filled.
    run_wrk(&server, &script, options, 2)?;
    let mut runs = Vec::new();
    for r in 1..=options.repetitions {
        let profiler = if options.perf && r == 1 {
            let data = out_dir.join(format!("perf-{label}.data"));
            let child = Command::new("perf")
                .args(["record", "-F", "499", "-g", "-o"])
                .arg(&data)
                .args([
                    "-p",
                    &server.child.id().to_string(),
                    "--",
                    "sleep",
                    &options.seconds.saturating_sub(1).max(1).to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run perf ({e}); apt-get install -y linux-perf"))?;
            eprintln!("[{label}] profiling into {} (perf report -i … --no-children)", data.display());
            Some(child)
        } else {
            None
        };
        let run = run_wrk(&server, &script, options, options.seconds)?;
        if let Some(mut p) = profiler {
            let _ = p.wait();
        }
        eprintln!(
            "[{label}] run {r}: {:.0} hand-outs/s, p50 {:.2} ms, p99 {:.2} ms, {:.0} µs server CPU per hand-out{}",
            run.rps,
            run.p50_ms,
            run.p99_ms,
            run.cpu_us_per_handout,
            if run.non_2xx > 0 { format!(", {} non-2xx!", run.non_2xx) } else { String::new() }
        );
        if run.non_2xx > 0 {
            return Err(format!("[{label}] {} hand-outs failed during the run", run.non_2xx));
        }
        runs.push(run);
    }
    Ok(json!({
        "backend": label,
        "users": options.users,
        "tokens": options.tokens,
        "connections": options.connections,
        "seconds": options.seconds,
        "runs": runs.iter().map(|r| json!({"handouts_per_sec": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
            "server_cpu_us_per_handout": r.cpu_us_per_handout})).collect::<Vec<_>>(),
        "median": {
            "handouts_per_sec": median(runs.iter().map(|r| r.rps).collect()),
            "p50_ms": median(runs.iter().map(|r| r.p50_ms).collect()),
            "p99_ms": median(runs.iter().map(|r| r.p99_ms).collect()),
            "server_cpu_us_per_handout": median(runs.iter().map(|r| r.cpu_us_per_handout).collect()),
        }
    }))
}

/// The deletion-webhook benchmark (issue 4): a user holding 1,000 grants is deleted by a
/// webhook; the time from sending it to its 200. Runs the ignored benchmark test of the webhook
/// suite in a release build and reads the durations it prints.
fn deletion_webhook(postgres_url: Option<&str>) -> Result<Value, String> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
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

/// `cargo xtask bench [--quick] [--users N] [--tokens N] [--connections N] [--seconds N]
/// [--repetitions N] [--no-postgres]`.
pub async fn run(args: &[String]) -> Result<(), String> {
    let options = BenchOptions::parse(args)?;
    if Command::new("wrk").arg("--version").output().is_err() {
        return Err("wrk is needed: apt-get install -y wrk".into());
    }
    let binary = build_release()?;
    let out_dir = workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let idp = FakeIdp::start().await;
    let verify_us = rs256_verify_cost_us(&idp)?;
    eprintln!("one RS256 verification (josekit): {verify_us:.1} µs");
    let mut results = vec![bench_backend("sqlite", &binary, None, &idp, &options, &out_dir).await?];
    if let Some(admin_url) = &options.postgres_url {
        match postgres_database(admin_url).await {
            Some((url, name)) => {
                let r = bench_backend("postgres", &binary, Some(&url), &idp, &options, &out_dir).await;
                drop_postgres_database(admin_url, &name).await;
                results.push(r?);
            }
            None => eprintln!("PostgreSQL not reachable at {admin_url}; skipped"),
        }
    }
    let reachable_pg = match &options.postgres_url {
        Some(url) => postgres_database(url).await.map(|(_, name)| name).map(|name| (url.clone(), name)),
        None => None,
    };
    if let Some((url, name)) = &reachable_pg {
        drop_postgres_database(url, name).await;
    }
    let deletion = if options.skip_deletion {
        Value::Null
    } else {
        deletion_webhook(reachable_pg.as_ref().map(|(url, _)| url.as_str()))?
    };
    let report = json!({
        "benchmark": "POST /v1/token over HTTP on loopback, warm caches, wrk -t1",
        "rs256_verify_us": verify_us,
        "results": results,
        "deletion_webhook": deletion,
    });
    let path = out_dir.join("handout.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap_or_default()).map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    eprintln!("written to {}", path.display());
    Ok(())
}
