//! The data directory and the SQLite files (issue 15, items 5 and 8): owner-only permissions
//! whatever the umask and wherever the secrets come from, and one serving process per SQLite
//! database.

use custody_server::Config;
use custody_tests::harness::{ADMIN_TOKEN, MASTER_KEYS};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

fn config(dir: &Path) -> Config {
    let url = format!("sqlite://{}", dir.join("custody.db").display());
    // Secrets from the configuration (the environment, in production): the data dir must be
    // owner-only all the same.
    Config::for_tests(&url, dir, ADMIN_TOKEN, MASTER_KEYS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_and_every_database_file_are_owner_only() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("custody-data");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let server = custody_server::start(config(&dir)).await.expect("starts");
    // A write, so that the WAL and shared-memory files exist.
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/v1/apps", server.public_url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"name": "Acme"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), 201);
    assert_eq!(mode(&dir), 0o700, "data dir");
    for name in ["custody.db", "custody.db-wal", "custody.db-shm", "custody.db.lock"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = custody_server::start(config(dir.path())).await.expect("the first starts");
    let err = custody_server::start(config(dir.path())).await.expect_err("the second must not start");
    let message = err.to_string();
    assert!(message.contains("another custody process"), "{message}");
    assert!(message.contains("custody.db"), "names the database: {message}");
    first.shutdown().await;
    // Once the first has stopped, the database is free again.
    let again = custody_server::start(config(dir.path())).await.expect("starts after the first stopped");
    again.shutdown().await;
}
