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
