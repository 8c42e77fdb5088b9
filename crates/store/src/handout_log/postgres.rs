//! PostgreSQL's statements for a batch of hand-out records: the touches and the audit rows, each
//! one statement text for every batch size, prepared once per connection and found again by
//! type (see `mod.rs` for the batching itself).

use super::{Record, Work};
use crate::models::NewAuditRow;
use diesel::QueryResult;

/// PostgreSQL: the new `last_used_at` of each grant and `last_seen_at` of each user a batch
/// moves, each id once with its latest time, in id order.
///
/// Written as one `UPDATE … FROM unnest(…)` per table ([`TouchArrays`]), not one `UPDATE` per
/// record: touches come in waves (every active user and grant is due again a minute after the
/// last), and as a round trip each inside the batch's transaction a wave of 2,000 touches held
/// every hand-out queued behind that batch (in `cargo xtask bench`, the round a minute after the
/// warm-up: 1.17 statements per hand-out instead of 1.06, p99 from 10 to 45 ms). The ids are
/// distinct because `UPDATE … FROM` updates a row once with whichever matching source row comes
/// first, which could be an earlier time; they are sorted so that concurrent writers lock rows
/// in one order.
pub(super) struct Touches<'a> {
    grants: std::collections::BTreeMap<&'a str, i64>,
    users: std::collections::BTreeMap<&'a str, i64>,
}

impl<'a> Touches<'a> {
    pub(super) fn of(records: &'a [Record]) -> Self {
        fn latest<'a>(map: &mut std::collections::BTreeMap<&'a str, i64>, id: &'a str, at: i64) {
            let entry = map.entry(id).or_insert(at);
            *entry = (*entry).max(at);
        }
        let mut touches = Touches { grants: Default::default(), users: Default::default() };
        for record in records {
            match &record.work {
                Work::Handout { grant, touch: Some(at), .. } => latest(&mut touches.grants, grant, *at),
                Work::Sighting { user, at } => latest(&mut touches.users, user, *at),
                Work::Handout { touch: None, .. } => {}
            }
        }
        touches
    }

    /// How many statements [`Touches::write`] sends: one per table with something to move.
    pub(super) fn statements(&self) -> usize {
        usize::from(!self.grants.is_empty()) + usize::from(!self.users.is_empty())
    }

    pub(super) async fn write(&self, conn: &mut crate::pool::PgConn) -> Result<(), diesel::result::Error> {
        if !self.grants.is_empty() {
            diesel_async::RunQueryDsl::execute(TouchArrays::<GrantsLastUsed>::of(&self.grants), conn).await?;
        }
        if !self.users.is_empty() {
            diesel_async::RunQueryDsl::execute(TouchArrays::<UsersLastSeen>::of(&self.users), conn).await?;
        }
        Ok(())
    }
}

/// The table and column a [`TouchArrays`] statement moves.
trait TouchedColumn: 'static {
    /// The statement up to the arrays.
    const HEAD: &'static str;
    /// The statement after them: the join on the id and the condition that never moves the time
    /// backwards.
    const TAIL: &'static str;
}

/// `grants.last_used_at`.
struct GrantsLastUsed;

impl TouchedColumn for GrantsLastUsed {
    const HEAD: &'static str = "UPDATE grants SET last_used_at = touched.at FROM unnest(";
    const TAIL: &'static str = ") AS touched(id, at) WHERE grants.id = touched.id \
                                AND (grants.last_used_at IS NULL OR grants.last_used_at < touched.at)";
}

/// `users.last_seen_at`.
struct UsersLastSeen;

impl TouchedColumn for UsersLastSeen {
    const HEAD: &'static str = "UPDATE users SET last_seen_at = touched.at FROM unnest(";
    const TAIL: &'static str = ") AS touched(id, at) WHERE users.id = touched.id \
                                AND (users.last_seen_at IS NULL OR users.last_seen_at < touched.at)";
}

/// PostgreSQL's conditional `UPDATE` of `C` for many ids at once, one text for every batch size,
/// prepared once per connection like [`InsertAuditArrays`].
struct TouchArrays<'a, C> {
    id: Vec<&'a str>,
    at: Vec<i64>,
    column: std::marker::PhantomData<C>,
}

impl<'a, C> TouchArrays<'a, C> {
    fn of(times: &std::collections::BTreeMap<&'a str, i64>) -> Self {
        Self {
            id: times.keys().copied().collect(),
            at: times.values().copied().collect(),
            column: std::marker::PhantomData,
        }
    }
}

impl<C: TouchedColumn> diesel::query_builder::QueryId for TouchArrays<'_, C> {
    type QueryId = TouchArrays<'static, C>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<C: TouchedColumn> diesel::query_builder::QueryFragment<diesel::pg::Pg> for TouchArrays<'_, C> {
    fn walk_ast<'b>(&'b self, mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Text};
        out.push_sql(C::HEAD);
        out.push_bind_param::<Array<Text>, _>(&self.id)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<BigInt>, _>(&self.at)?;
        out.push_sql("::int8[]");
        out.push_sql(C::TAIL);
        Ok(())
    }
}

/// The audit rows of `records` in one [`InsertAuditArrays`].
pub(super) async fn insert_postgres(
    conn: &mut crate::pool::PgConn,
    records: &[Record],
) -> Result<(), diesel::result::Error> {
    let rows: Vec<NewAuditRow<'_>> = records.iter().filter_map(Record::audit).map(NewAuditRow::from).collect();
    if rows.is_empty() {
        return Ok(());
    }
    diesel_async::RunQueryDsl::execute(InsertAuditArrays::of(&rows), conn).await.map(drop)
}

/// PostgreSQL's audit `INSERT … SELECT FROM unnest(…)`: one array per column, so the statement
/// text is the same for every batch size (a multi-row `VALUES` is a new statement for every
/// size). A query type of its own with a `'static` query id, so that diesel prepares it once per
/// connection and finds it again by type: `sql_query` is never cached, and with it every batch
/// was parsed and planned again (`pg_stat_statements` counted as many plans as calls).
pub(super) struct InsertAuditArrays<'a> {
    id: Vec<&'a str>,
    app_id: Vec<&'a str>,
    at: Vec<i64>,
    action: Vec<&'a str>,
    actor: Vec<&'a str>,
    user_id: Vec<Option<&'a str>>,
    grant_id: Vec<Option<&'a str>>,
    provider: Vec<Option<&'a str>>,
    outcome: Vec<&'a str>,
    detail: Vec<Option<&'a str>>,
}

impl<'a> InsertAuditArrays<'a> {
    fn of(rows: &[NewAuditRow<'a>]) -> Self {
        Self {
            id: rows.iter().map(|r| r.id).collect(),
            app_id: rows.iter().map(|r| r.app_id).collect(),
            at: rows.iter().map(|r| r.at).collect(),
            action: rows.iter().map(|r| r.action).collect(),
            actor: rows.iter().map(|r| r.actor).collect(),
            user_id: rows.iter().map(|r| r.user_id).collect(),
            grant_id: rows.iter().map(|r| r.grant_id).collect(),
            provider: rows.iter().map(|r| r.provider).collect(),
            outcome: rows.iter().map(|r| r.outcome).collect(),
            detail: rows.iter().map(|r| r.detail).collect(),
        }
    }
}

impl diesel::query_builder::QueryId for InsertAuditArrays<'_> {
    type QueryId = InsertAuditArrays<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for InsertAuditArrays<'_> {
    fn walk_ast<'b>(&'b self, mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Nullable, Text};
        out.push_sql(
            "INSERT INTO audit_log (id, app_id, at, action, actor, user_id, grant_id, provider, outcome, detail) \
             SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.id)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.app_id)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<BigInt>, _>(&self.at)?;
        out.push_sql("::int8[], ");
        out.push_bind_param::<Array<Text>, _>(&self.action)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.actor)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.user_id)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.grant_id)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.provider)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.outcome)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.detail)?;
        out.push_sql("::text[])");
        Ok(())
    }
}
