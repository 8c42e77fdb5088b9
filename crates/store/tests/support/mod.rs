//! What the contract suites share: [`store_test!`], which runs one case on each backend in a
//! database of its own.

/// Turns each `async fn name(db: TestDatabase, store: Store)` named into one test per backend,
/// `name::sqlite` and `name::postgres`, each given a fresh, migrated database, so a failure
/// names its backend and no case depends on another. The PostgreSQL test passes without running
/// when `CUSTODY_TEST_POSTGRES_URL` is unset.
macro_rules! store_test {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::support::run(custody_store::Backend::Sqlite, super::$name).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::support::run(custody_store::Backend::Postgres, super::$name).await;
            }
        }
    )+};
}

/// Runs `case` on a fresh database of `backend`, when the environment provides that backend.
pub async fn run<F, Fut>(backend: custody_store::Backend, case: F)
where
    F: FnOnce(custody_store::testing::TestDatabase, custody_store::Store) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if !custody_store::testing::backends().contains(&backend) {
        return;
    }
    let db = custody_store::testing::TestDatabase::new(backend).await.expect("test database");
    let store = db.connect().await.expect("connect to the test database");
    assert_eq!(store.backend(), backend);
    case(db, store).await;
}

// The seeding helpers below are shared by the vault and sign-in suites; a suite that does not
// use one would otherwise warn.

/// The fixed "now" of the contract suites.
#[allow(dead_code)]
pub const NOW: custody_identity::time::UnixTime = custody_identity::time::UnixTime(1_800_000_000);

/// A new random UUID in text form.
#[allow(dead_code)]
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A successful operator audit row of `action` on `app` at `at`.
#[allow(dead_code)]
pub fn audit(
    app: &custody_identity::ids::AppId,
    action: &str,
    at: custody_identity::time::UnixTime,
) -> custody_identity::audit::AuditEntry {
    custody_identity::audit::AuditEntry {
        id: uuid(),
        app_id: app.clone(),
        at,
        action: action.to_owned(),
        actor: "operator".to_owned(),
        user_id: None,
        grant_id: None,
        provider: None,
        outcome: custody_identity::audit::AuditOutcome::Success,
        detail: None,
    }
}

/// An app "Acme" created at `at` (not stored).
#[allow(dead_code)]
pub fn app_at(at: custody_identity::time::UnixTime) -> custody_identity::app::App {
    use custody_identity::app::{App, AppName};
    App {
        id: custody_identity::ids::AppId::parse(&uuid()).unwrap(),
        name: AppName::parse("Acme").unwrap(),
        created_at: at,
    }
}

/// A new API key of `app` created at `at` (not stored).
#[allow(dead_code)]
pub fn key_for(
    app: &custody_identity::ids::AppId,
    at: custody_identity::time::UnixTime,
) -> custody_identity::app::ApiKeyRecord {
    custody_identity::app::ApiKeyRecord {
        id: custody_identity::ids::ApiKeyId::parse(&uuid()).unwrap(),
        app_id: app.clone(),
        prefix: uuid().replace('-', "")[..16].to_owned(),
        hash: vec![7; 32],
        created_at: at,
        last_used_at: None,
    }
}

/// An app "Acme" with one API key, created at [`NOW`].
#[allow(dead_code)]
pub async fn seed_app(store: &custody_store::Store) -> custody_identity::app::App {
    use custody_identity::ports::AppStore as _;
    let app = app_at(NOW);
    store.create_app(&app, &key_for(&app.id, NOW), &audit(&app.id, "app.create", NOW)).await.unwrap();
    app
}
