//! [`HandoutContexts`] for [`Store`]: the hand-out's single read.
//!
//! `POST /v1/token` used to read three times (the API key with its app's IdP configuration, the
//! user, then the grant with its policy and credential), each a separate statement, each its own
//! read transaction: on SQLite three B-tree descents from the root and three checks of the WAL
//! index, on PostgreSQL three round trips. Here the key is the root of one statement and every
//! other row hangs off it by a left join, so a missing row is a `NULL` group, not a missing
//! answer. The key is found by everything the admitted record says of it (prefix, id and hash),
//! so a key deleted or replaced since admission makes no row at all:
//!
//! ```sql
//! SELECT … FROM api_keys
//!   LEFT JOIN idp_configs ON idp_configs.app_id = api_keys.app_id
//!   LEFT JOIN users       ON users.app_id = api_keys.app_id AND users.subject = $subject
//!   LEFT JOIN grants      ON grants.app_id = api_keys.app_id AND grants.user_id = users.id
//!                          AND grants.provider = $provider            -- or grants.id = $grant
//!   LEFT JOIN policies    ON (policies.app_id, policies.provider) = (grants.app_id, grants.provider)
//!   LEFT JOIN credentials ON credentials.grant_id = grants.id
//! WHERE api_keys.prefix = $prefix AND api_keys.id = $id AND api_keys.hash = $hash
//! ```
//!
//! It selects only what the hand-out does not know already: nothing of the key; of each other
//! row, its "body" (`models.rs`), without the columns it was joined on (the app, the user's
//! subject, the grant's user, the policy's provider, the credential's grant), which are the
//! values of the row it hangs off. That is 28 columns instead of the 41 of the whole rows, and
//! the dropped ones were nearly all text: decoding each copies it into an allocation of its own,
//! and on PostgreSQL each also crosses the socket.
//!
//! Every join is on a unique or indexed key (`api_keys.prefix`, `idp_configs.app_id`,
//! `users (app_id, subject)`, `grants (user_id, provider, updated_at)`, the policies' and
//! credentials' primary keys), so the statement touches the same pages the three did. The one
//! query text is written with diesel's DSL and type-checked against both backends.
//!
//! By provider, the statement returns a row per grant the user has for it (one, unless
//! reconnections left revoked or expired ones behind; the partial unique index allows one
//! active), and [`preferred`] picks the one `handout_view` picks: the active grant first, then
//! the most recently updated. The database used to pick it with `ORDER BY … LIMIT 1`, which on
//! PostgreSQL is a sort node set up on every execution for the one row it nearly always has:
//! without it the statement ran 3% to 19% faster in three `pgbench` runs (16 clients), and
//! `pg_stat_statements` put its execution at 26 µs instead of 36 in `cargo xtask bench`.

use crate::error::db_error;
use crate::models::{CredentialBody, GrantBody, PolicyBody, UserBody};
use crate::pool::{checkout_postgres, checkout_sqlite_read, DbPool, PgConn};
use crate::rendered::{Bind, Rendered, SqlPieces};
use crate::schema::{api_keys, credentials, grants, idp_configs, policies, users};
use crate::store::Store;
use async_trait::async_trait;
use custody_identity::app::ApiKeyRecord;
use custody_identity::ports::StoreError;
use custody_vault::grant::GrantStatus;
use custody_vault::policy::PolicyLookup;
use custody_vault::ports::{GrantSelector, HandoutContext, HandoutContexts, HandoutView, IdpStamp};
use diesel::prelude::*;
use std::sync::OnceLock;

/// One row of the hand-out's read: the IdP's version and lock time, and the bodies of the user,
/// grant, policy and credential (each `None` when its row does not exist).
type ContextRow =
    (Option<i64>, Option<i64>, Option<UserBody>, Option<GrantBody>, Option<PolicyBody>, Option<CredentialBody>);

/// Evaluates `$body` with `$query` bound to the hand-out statement for the key `$key` (prefix,
/// id and hash, in that order) whose grant join also requires `$grant_filter` (the selector): one
/// expansion per selector, so each is fully typed.
///
/// The binds are owned: with this many joins the compiler cannot prove that borrowed binds
/// outlive diesel-async's query future behind `async_trait` and asks for `'static` ones.
macro_rules! with_context_query {
    ([$prefix:expr, $id:expr, $hash:expr], $subject:expr, $grant_filter:expr, |$query:ident| $body:expr) => {{
        let $query = api_keys::table
            .left_join(idp_configs::table.on(idp_configs::app_id.eq(api_keys::app_id)))
            .left_join(users::table.on(users::app_id.eq(api_keys::app_id).and(users::subject.eq($subject.to_owned()))))
            .left_join(
                grants::table
                    .on(grants::app_id.eq(api_keys::app_id).and(grants::user_id.eq(users::id)).and($grant_filter)),
            )
            .left_join(
                policies::table.on(policies::app_id.eq(grants::app_id).and(policies::provider.eq(grants::provider))),
            )
            .left_join(credentials::table.on(credentials::grant_id.eq(grants::id)))
            .filter(
                api_keys::prefix
                    .eq($prefix.to_owned())
                    .and(api_keys::id.eq($id.to_owned()))
                    .and(api_keys::hash.eq($hash.to_vec())),
            )
            .select((
                idp_configs::version.nullable(),
                idp_configs::claims_locked_at.nullable(),
                Option::<UserBody>::as_select(),
                Option::<GrantBody>::as_select(),
                Option::<PolicyBody>::as_select(),
                Option::<CredentialBody>::as_select(),
            ));
        $body
    }};
}

/// The text of the hand-out statement on each backend, by provider and by grant id, rendered
/// once (see `rendered.rs`).
static SQLITE_BY_PROVIDER: OnceLock<SqlPieces> = OnceLock::new();
static SQLITE_BY_ID: OnceLock<SqlPieces> = OnceLock::new();
static POSTGRES_BY_PROVIDER: OnceLock<SqlPieces> = OnceLock::new();
static POSTGRES_BY_ID: OnceLock<SqlPieces> = OnceLock::new();

/// The hand-out statement for `$selector` on `$backend` with its binds, as a [`Rendered`]
/// statement of the DSL query: its text comes from `$by_provider` or `$by_id`. The binds are in
/// the order the DSL query pushes them (the subject in the users join, the selector in the grants
/// join, the key's prefix, id and hash in the `WHERE`), which the tests check against the DSL
/// query.
macro_rules! context_statement {
    ($backend:ty, [$by_provider:expr, $by_id:expr], $key:expr, $subject:expr, $selector:expr, |$statement:ident| $body:expr) => {
        match $selector {
            GrantSelector::Provider(provider) => {
                let witness =
                    || with_context_query!(["", "", b""], "", grants::provider.eq(String::new()), |query| query);
                let binds = context_binds($key, $subject, provider.as_str());
                match Rendered::new::<$backend>(&$by_provider, witness, binds) {
                    Ok($statement) => $body,
                    Err(e) => Err(e),
                }
            }
            GrantSelector::Id(id) => {
                let witness = || with_context_query!(["", "", b""], "", grants::id.eq(String::new()), |query| query);
                let binds = context_binds($key, $subject, id.as_str());
                match Rendered::new::<$backend>(&$by_id, witness, binds) {
                    Ok($statement) => $body,
                    Err(e) => Err(e),
                }
            }
        }
    };
}

/// The binds of the hand-out statement for `key`, `subject` and the selector's value, in the
/// order its DSL query pushes them (see [`context_statement`]).
fn context_binds(key: &ApiKeyRecord, subject: &str, selector: &str) -> [Bind; 5] {
    [
        Bind::Text(subject.to_owned()),
        Bind::Text(selector.to_owned()),
        Bind::Text(key.prefix.clone()),
        Bind::Text(key.id.as_str().to_owned()),
        Bind::Binary(key.hash.clone()),
    ]
}

/// Of the rows of one hand-out statement (all with the same key, IdP and user, one per grant
/// that matched), the one whose grant `handout_view` would choose: the active grant first, then
/// the most recently updated, then the greatest id. `None` for no rows (no such key).
fn preferred(rows: Vec<ContextRow>) -> Option<ContextRow> {
    fn rank(row: &ContextRow) -> Option<(bool, i64, &str)> {
        row.3.as_ref().map(|grant| (grant.status == GrantStatus::Active.as_str(), grant.updated_at, grant.id.as_str()))
    }
    rows.into_iter().reduce(|best, row| if rank(&row) > rank(&best) { row } else { best })
}

#[async_trait]
impl HandoutContexts for Store {
    async fn handout_context(
        &self,
        key: &ApiKeyRecord,
        subject: &str,
        selector: &GrantSelector,
    ) -> Result<Option<HandoutContext>, StoreError> {
        let row: Option<ContextRow> = match self.pool() {
            // Through diesel's synchronous API on the inline read connection: its statement cache
            // finds the prepared statement by the query's type, whereas diesel-async's path
            // serializes the statement to SQL text (and copies every bind) on each call so it
            // could cross threads, which this connection never does.
            DbPool::Sqlite(_) => {
                let mut pooled = checkout_sqlite_read(self.sqlite_reads()?, self.acquire_timeout()).await?;
                self.count_calls(&mut pooled);
                context_statement!(
                    diesel::sqlite::Sqlite,
                    [SQLITE_BY_PROVIDER, SQLITE_BY_ID],
                    key,
                    subject,
                    selector,
                    |statement| pooled
                        .spawn_blocking(
                            move |conn| diesel::RunQueryDsl::load::<ContextRow>(statement, conn).map(preferred)
                        )
                        .await
                )
                .map_err(db_error)?
            }
            DbPool::Postgres(pool) => {
                let mut pooled = checkout_postgres(pool, self.acquire_timeout()).await?;
                self.count_calls(&mut pooled);
                let conn: &mut PgConn = &mut pooled;
                context_statement!(
                    diesel::pg::Pg,
                    [POSTGRES_BY_PROVIDER, POSTGRES_BY_ID],
                    key,
                    subject,
                    selector,
                    |statement| diesel_async::RunQueryDsl::load::<ContextRow>(statement, conn).await.map(preferred)
                )
                .map_err(db_error)?
            }
        };
        let Some((idp_version, claims_locked_at, user, grant, policy, credential)) = row else {
            return Ok(None);
        };
        // Each body takes the values of the row it was joined on (see the module docs).
        let user = user.map(|user| user.into_user(key.app_id.clone(), subject.to_owned())).transpose()?;
        let view = match (&user, grant) {
            (Some(user), Some(grant)) => {
                let grant = grant.into_grant(user.app_id.clone(), user.id.clone())?;
                Some(HandoutView {
                    policy: policy.map_or(PolicyLookup::None, |policy| {
                        policy.into_lookup(grant.app_id.clone(), grant.provider.clone())
                    }),
                    credential: credential.map(|credential| credential.into_credential(grant.id.clone())),
                    grant,
                })
            }
            // A grant is joined on the user's id, so it never comes without its user.
            _ => None,
        };
        Ok(Some(HandoutContext {
            idp: idp_version.map(|version| IdpStamp { version, claims_locked: claims_locked_at.is_some() }),
            user,
            view,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody_identity::ids::{ApiKeyId, AppId};
    use custody_identity::UnixTime;
    use custody_vault::grant::GrantId;
    use custody_vault::provider::ProviderName;
    use diesel::pg::Pg;
    use diesel::sqlite::Sqlite;

    /// An API key record, with a hash whose bytes are not text.
    fn a_key() -> ApiKeyRecord {
        ApiKeyRecord {
            id: ApiKeyId::try_from("00000000-0000-4000-8000-00000000000a".to_owned()).unwrap(),
            app_id: AppId::try_from("00000000-0000-4000-8000-00000000000b".to_owned()).unwrap(),
            prefix: "ck_0a1b".to_owned(),
            hash: vec![0, 0xff, 0x7f, 0x80],
            created_at: UnixTime(1),
            last_used_at: None,
        }
    }

    /// The hand-out statement for `selector`, rendered with its binds by the DSL query and by the
    /// [`Rendered`] statement that runs in its place, on `$backend`.
    macro_rules! both_renderings {
        ($backend:ty, $cells:tt, $selector:expr) => {{
            let key = a_key();
            let subject = "auth0|alice";
            let (prefix, id, hash) = (key.prefix.as_str(), key.id.as_str(), key.hash.as_slice());
            let dsl = match $selector {
                GrantSelector::Provider(provider) => with_context_query!(
                    [prefix, id, hash],
                    subject,
                    grants::provider.eq(provider.as_str().to_owned()),
                    |query| diesel::debug_query::<$backend, _>(&query).to_string()
                ),
                GrantSelector::Id(id_) => {
                    with_context_query!([prefix, id, hash], subject, grants::id.eq(id_.as_str().to_owned()), |query| {
                        diesel::debug_query::<$backend, _>(&query).to_string()
                    })
                }
            };
            let rendered = context_statement!($backend, $cells, &key, subject, $selector, |statement| {
                Ok::<_, diesel::result::Error>(diesel::debug_query::<$backend, _>(&statement).to_string())
            })
            .expect("the statement renders");
            (dsl, rendered)
        }};
    }

    /// The statement that runs is the DSL query's, placeholders and bind order included (the
    /// debug rendering lists the binds in order), on both backends and for both selectors.
    #[test]
    fn the_rendered_statements_are_the_dsl_queries_binds_included() {
        let selectors = [
            GrantSelector::Provider(ProviderName::parse("github").unwrap()),
            GrantSelector::Id(GrantId::parse("00000000-0000-4000-8000-000000000001").unwrap()),
        ];
        for selector in &selectors {
            let (dsl, rendered) = both_renderings!(Sqlite, [SQLITE_BY_PROVIDER, SQLITE_BY_ID], selector);
            assert_eq!(rendered, dsl);
            assert!(rendered.contains("auth0|alice") && rendered.matches('?').count() == 5, "{rendered}");
            assert!(rendered.contains("[0, 255, 127, 128]"), "the hash is bound as bytes: {rendered}");
            let (dsl, rendered) = both_renderings!(Pg, [POSTGRES_BY_PROVIDER, POSTGRES_BY_ID], selector);
            assert_eq!(rendered, dsl);
            assert!(rendered.contains("$5") && !rendered.contains("$6"), "{rendered}");
        }
    }
}
