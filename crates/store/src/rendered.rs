//! Statements whose SQL text is rendered once per process, not on every execution.
//!
//! diesel walks a query's whole expression tree on every execution: to collect its binds (every
//! selected column and join condition is a node visited), and, in diesel-async's PostgreSQL
//! connection, also to render the SQL text again before it looks the prepared statement up by
//! the query's type. For the hand-out's read (six tables, some forty columns) that walk was a
//! tenth of the server's CPU per hand-out on PostgreSQL and a twentieth on SQLite (flat profiles
//! of `cargo xtask bench`).
//!
//! A [`Rendered`] statement carries the text of a diesel DSL query, rendered once for its
//! backend and split at its bind placeholders into [`SqlPieces`], and the values of its binds.
//! Its walk pushes the pieces and the binds and nothing else, so the text, the placeholders and
//! the bind order come out exactly as the DSL query's would. The DSL query stays the source of
//! the text and of the row type ([`Query::SqlType`] is the DSL query's), so the statement is
//! still checked against the schema when it compiles.

use diesel::backend::Backend;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::Error as DieselError;
use diesel::serialize::ToSql;
use diesel::sql_types::{Binary, HasSqlType, Text};
use diesel::sqlite::Sqlite;
use diesel::QueryResult;
use std::marker::PhantomData;
use std::sync::OnceLock;

/// How a backend writes the placeholder of a bind in SQL text.
pub(crate) trait Placeholders: Backend + Default {
    /// The length of the placeholder at the start of `sql`, if one starts there.
    fn placeholder_len(sql: &str) -> Option<usize>;
}

impl Placeholders for Sqlite {
    fn placeholder_len(sql: &str) -> Option<usize> {
        sql.starts_with('?').then_some(1)
    }
}

impl Placeholders for Pg {
    /// `$` and the bind's number.
    fn placeholder_len(sql: &str) -> Option<usize> {
        let digits = sql.strip_prefix('$')?.bytes().take_while(u8::is_ascii_digit).count();
        (digits > 0).then_some(1 + digits)
    }
}

/// A statement's SQL text split at its bind placeholders: one piece more than binds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SqlPieces(Vec<String>);

impl SqlPieces {
    /// The text of `query` on `DB`, split at its placeholders; an error unless it has exactly
    /// `binds` of them.
    ///
    /// Renders through [`diesel::debug_query`], the one public way to render a query's text,
    /// whose output is the text, then ` -- binds: ` and the binds' debug form.
    fn render<DB, Q>(query: &Q, binds: usize) -> QueryResult<Self>
    where
        DB: Placeholders,
        DB::QueryBuilder: Default,
        Q: QueryFragment<DB>,
    {
        let rendered = diesel::debug_query::<DB, _>(query).to_string();
        let sql = rendered.rsplit_once(" -- binds: ").map_or(rendered.as_str(), |(sql, _)| sql);
        let mut pieces = Vec::with_capacity(binds + 1);
        let mut piece_start = 0;
        let mut at = 0;
        while at < sql.len() {
            match DB::placeholder_len(&sql[at..]) {
                Some(len) => {
                    pieces.push(sql[piece_start..at].to_owned());
                    at += len;
                    piece_start = at;
                }
                // Placeholders are ASCII, so stepping a whole character never skips one.
                None => at += sql[at..].chars().next().map_or(1, char::len_utf8),
            }
        }
        pieces.push(sql[piece_start..].to_owned());
        if pieces.len() != binds + 1 {
            return Err(DieselError::QueryBuilderError(
                format!("expected {binds} bind placeholders in the statement, found {}", pieces.len() - 1).into(),
            ));
        }
        Ok(Self(pieces))
    }

    /// The pieces of `witness`'s text in `cell`, rendered on the first call.
    ///
    /// `witness` builds the DSL query (its bind values do not matter); it is only called on the
    /// first call, since building a query of six joins moves a large value around several times
    /// and clones parts of it. The same `cell` must only ever see the same query on the same
    /// backend.
    pub(crate) fn of<DB, Q>(
        cell: &'static OnceLock<SqlPieces>,
        witness: impl FnOnce() -> Q,
        binds: usize,
    ) -> QueryResult<&'static Self>
    where
        DB: Placeholders,
        DB::QueryBuilder: Default,
        Q: QueryFragment<DB>,
    {
        if let Some(pieces) = cell.get() {
            return Ok(pieces);
        }
        let pieces = Self::render::<DB, Q>(&witness(), binds)?;
        Ok(cell.get_or_init(|| pieces))
    }
}

/// The value of one bind of a [`Rendered`] statement, of the SQL type the DSL query gives it.
#[derive(Debug)]
pub(crate) enum Bind {
    /// `TEXT` (`Text`).
    Text(String),
    /// `BLOB` on SQLite, `bytea` on PostgreSQL (`Binary`).
    Binary(Vec<u8>),
}

/// The statement of the DSL query type `Q`, as [`SqlPieces`] rendered from it, with `N` binds in
/// the order the DSL query pushes them.
pub(crate) struct Rendered<Q, const N: usize> {
    pieces: &'static SqlPieces,
    binds: [Bind; N],
    query: PhantomData<fn() -> Q>,
}

impl<Q, const N: usize> Rendered<Q, N> {
    /// The statement of the text of the query `witness` builds, with `binds`; its pieces come
    /// from (or go to) `cell`, so `witness` is only called the first time.
    pub(crate) fn new<DB>(
        cell: &'static OnceLock<SqlPieces>,
        witness: impl FnOnce() -> Q,
        binds: [Bind; N],
    ) -> QueryResult<Self>
    where
        DB: Placeholders,
        DB::QueryBuilder: Default,
        Q: QueryFragment<DB>,
    {
        Ok(Self { pieces: SqlPieces::of::<DB, Q>(cell, witness, N)?, binds, query: PhantomData })
    }
}

impl<Q, DB, const N: usize> QueryFragment<DB> for Rendered<Q, N>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<Binary>,
    String: ToSql<Text, DB>,
    Vec<u8>: ToSql<Binary, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let Some((first, rest)) = self.pieces.0.split_first() else { return Ok(()) };
        out.push_sql(first);
        for (bind, piece) in self.binds.iter().zip(rest) {
            match bind {
                Bind::Text(text) => out.push_bind_param::<Text, String>(text)?,
                Bind::Binary(bytes) => out.push_bind_param::<Binary, Vec<u8>>(bytes)?,
            }
            out.push_sql(piece);
        }
        Ok(())
    }
}

/// One prepared statement per DSL query type (and so per text on a connection's backend).
impl<Q: 'static, const N: usize> QueryId for Rendered<Q, N> {
    type QueryId = Self;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<Q: Query, const N: usize> Query for Rendered<Q, N> {
    type SqlType = Q::SqlType;
}

impl<Q, Conn, const N: usize> diesel::RunQueryDsl<Conn> for Rendered<Q, N> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised_per_backend() {
        assert_eq!(Sqlite::placeholder_len("? AND"), Some(1));
        assert_eq!(Sqlite::placeholder_len("$1"), None);
        assert_eq!(Pg::placeholder_len("$12 AND"), Some(3));
        assert_eq!(Pg::placeholder_len("$ AND"), None);
        assert_eq!(Pg::placeholder_len("?"), None);
    }
}
