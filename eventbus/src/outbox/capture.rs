//! Database change capture into the outbox: triggers that write a
//! `record_create` / `record_change` / `record_delete` CloudEvent into
//! `eventbus_outbox` for every row a chosen table gains, changes or loses,
//! whoever makes the change (this service, a migration, `psql`, a Python
//! script), in the transaction of the change.
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # async fn demo(pool: sqlx::PgPool) -> eventbus::Result<()> {
//! use eventbus::outbox::capture::{self, Capture};
//!
//! Capture::table("review").model("Review").id("id").apply(&pool).await?; // idempotent, at start
//!
//! let mut tx = pool.begin().await.map_err(|e| eventbus::Error::Config(e.to_string()))?;
//! capture::set_actor(&mut *tx, Some("user:42")).await?; // who: the `actor` extension
//! sqlx::query("UPDATE review SET title = 'new' WHERE id = 1")
//!     .execute(&mut *tx)
//!     .await
//!     .map_err(|e| eventbus::Error::Config(e.to_string()))?;
//! capture::commit(tx).await?; // one `record_change` row, sent by the relay
//! # Ok(()) }
//! ```
//!
//! See the [outbox docs](super#change-capture) for the events, the actor
//! and what is not captured.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::{Database, db_error, sealed};
use crate::error::{Error, Result};

/// The name of the triggers (PostgreSQL: on each captured table; SQLite:
/// `eventbus_capture_<table>_insert`, `_update`, `_delete`) and of the
/// PostgreSQL trigger function.
pub const TRIGGER: &str = "eventbus_capture";

/// The PostgreSQL setting the triggers read the actor from
/// (`SET LOCAL eventbus.actor = 'user:42'`).
pub const ACTOR_SETTING: &str = "eventbus.actor";

/// The SQLite table the triggers read the actor from (one row, written
/// inside the transaction by [`set_actor`]).
pub const ACTOR_TABLE: &str = "eventbus_capture_actor";

/// The change capture of one table. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    schema: Option<String>,
    table: String,
    model: String,
    id: String,
    source: Option<String>,
}

impl Capture {
    /// Captures the changes of `table` (its name as stored: case-sensitive;
    /// a table created without quotes has a lowercase name). The model name
    /// defaults to the table name, the id column to `id`.
    pub fn table(table: impl Into<String>) -> Self {
        let table = table.into();
        Self {
            schema: None,
            model: table.clone(),
            table,
            id: "id".to_owned(),
            source: None,
        }
    }

    /// The PostgreSQL schema of the table (default: the `search_path`).
    /// Not available on SQLite, whose triggers write only into their own
    /// database.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The `model_name` in the events' data (`"Review"`).
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// The column identifying a row: `data.id` (a JSON number or string, as
    /// the column's type gives it) and the `subject` (as text).
    pub fn id(mut self, column: impl Into<String>) -> Self {
        self.id = column.into();
        self
    }

    /// The CloudEvents `source` of the events (default `/<table>`, e.g.
    /// `/review`; a bare name is written as `/name`).
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The `source` the events carry.
    pub fn source_attribute(&self) -> String {
        match &self.source {
            Some(s) => crate::codec::normalize_source(s).into_owned(),
            None => format!("/{}", self.table),
        }
    }

    /// The table this capture is about.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    fn check(&self) -> Result<()> {
        identifier("table", &self.table)?;
        identifier("id column", &self.id)?;
        if let Some(schema) = &self.schema {
            identifier("schema", schema)?;
        }
        text("model", &self.model)?;
        if let Some(source) = &self.source {
            text("source", source)?;
            if source.chars().any(char::is_whitespace) {
                return Err(Error::Config(format!(
                    "capture: the source `{}` has a space; a CloudEvents source is a URI reference such as `/reviews`",
                    source.escape_debug()
                )));
            }
        }
        Ok(())
    }

    /// Creates (or replaces) the triggers that capture the table's changes,
    /// and the outbox table if it is missing. Idempotent: applying again,
    /// with the same or other settings, leaves one set of triggers. On
    /// PostgreSQL it runs under the advisory lock of
    /// [`migrate`](super::migrate), so concurrent starts do not race.
    ///
    /// A table or id column that does not exist, or a name that is not a
    /// plain SQL identifier (letters, digits, `_`), is an [`Error::Config`].
    pub async fn apply(&self, db: impl Into<Database>) -> Result<()> {
        self.check()?;
        match db.into() {
            #[cfg(feature = "postgres")]
            Database::Postgres(pool) => pg::apply(&pool, self).await,
            #[cfg(feature = "sqlite")]
            Database::Sqlite(pool) => lite::apply(&pool, self).await,
        }
    }

    /// Removes the table's capture triggers (the changes after it are no
    /// longer recorded; rows already in the outbox stay). Idempotent, also
    /// when the table does not exist. The shared PostgreSQL trigger function
    /// stays (other tables may use it).
    pub async fn drop(&self, db: impl Into<Database>) -> Result<()> {
        self.check()?;
        match db.into() {
            #[cfg(feature = "postgres")]
            Database::Postgres(pool) => pg::drop(&pool, self).await,
            #[cfg(feature = "sqlite")]
            Database::Sqlite(pool) => lite::drop(&pool, self).await,
        }
    }
}

/// Checks a name that goes into DDL: a plain SQL identifier.
fn identifier(what: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63;
    if plain {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "capture: `{}` is not a valid {what} name; use letters, digits and `_` (starting with a letter or `_`, at most 63)",
            name.escape_debug()
        )))
    }
}

/// Checks a value that goes into the events: not empty, no control character.
fn text(what: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 200 || value.chars().any(char::is_control) {
        return Err(Error::Config(format!(
            "capture: the {what} `{}` must be 1 to 200 characters without control characters",
            value.escape_debug()
        )));
    }
    Ok(())
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as an SQL string literal.
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The trigger function (PostgreSQL), shared by every captured table; its
/// arguments are the model name, the id column and the source.
///
/// `SET search_path FROM CURRENT` pins the `search_path` of the session that
/// applied it, so that the function finds `eventbus_outbox` whatever the
/// `search_path` of the session making the change.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub const POSTGRES_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION eventbus_capture() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $eventbus$
DECLARE
    model   text := TG_ARGV[0];
    id_col  text := TG_ARGV[1];
    src     text := TG_ARGV[2];
    rec     jsonb;
    changed json;
    kind    text;
    subject text;
    actor   text;
    ev_id   uuid;
    data    json;
    payload text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        -- The columns whose value changed, in table order; none: no event.
        SELECT json_agg(n.key ORDER BY n.i) INTO changed
        FROM json_each(row_to_json(NEW)) WITH ORDINALITY AS n(key, value, i)
        JOIN json_each(row_to_json(OLD)) AS o(key, value) ON o.key = n.key
        WHERE n.value::jsonb IS DISTINCT FROM o.value::jsonb;
        IF changed IS NULL THEN
            RETURN NULL;
        END IF;
        kind := 'record_change';
        rec := to_jsonb(NEW);
    ELSIF TG_OP = 'INSERT' THEN
        kind := 'record_create';
        rec := to_jsonb(NEW);
    ELSE
        kind := 'record_delete';
        rec := to_jsonb(OLD);
    END IF;

    subject := nullif(regexp_replace(rec ->> id_col, '[\x01-\x1f\x7f-\x9f]', '', 'g'), '');
    actor := nullif(regexp_replace(coalesce(current_setting('eventbus.actor', true), ''),
                                   '[\x01-\x1f\x7f-\x9f]', '', 'g'), '');
    -- A UUIDv7: 48 bits of Unix milliseconds, then random bits.
    ev_id := encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                 PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                 FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid;
    IF changed IS NULL THEN
        data := json_build_object('id', rec -> id_col, 'model_name', model);
    ELSE
        data := json_build_object('id', rec -> id_col, 'model_name', model, 'changed', changed);
    END IF;
    payload := json_build_object(
        'specversion', '1.0',
        'id', ev_id,
        'source', src,
        'type', kind,
        'time', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'datacontenttype', 'application/json',
        'subject', subject,
        'data', data)::text;
    IF actor IS NOT NULL THEN
        payload := left(payload, -1) || ', "actor" : ' || to_json(actor)::text || '}';
    END IF;
    INSERT INTO eventbus_outbox (id, event_type, payload, key)
    VALUES (ev_id, kind, payload::json, subject);
    RETURN NULL;
END
$eventbus$;
"#;

#[cfg(feature = "postgres")]
mod pg {
    use sqlx::PgPool;

    use super::{Capture, TRIGGER, quote_ident, quote_literal};
    use crate::error::{Error, Result};
    use crate::outbox::db_error;

    /// `"schema"."table"` or `"table"`.
    fn target(c: &Capture) -> String {
        match &c.schema {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&c.table)),
            None => quote_ident(&c.table),
        }
    }

    fn shown(c: &Capture) -> String {
        match &c.schema {
            Some(s) => format!("{s}.{}", c.table),
            None => c.table.clone(),
        }
    }

    pub(super) async fn apply(pool: &PgPool, c: &Capture) -> Result<()> {
        let what = "cannot apply the change capture";
        let mut tx = pool.begin().await.map_err(db_error(what))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(crate::outbox::postgres::MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db_error(what))?;
        sqlx::raw_sql(crate::outbox::POSTGRES_SCHEMA)
            .execute(&mut *tx)
            .await
            .map_err(db_error(what))?;
        let target = target(c);
        let found: Option<(String, bool)> = sqlx::query_as(
            "SELECT c.relkind::text, EXISTS (
                 SELECT 1 FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped)
             FROM pg_class c WHERE c.oid = to_regclass($1::text)",
        )
        .bind(&target)
        .bind(&c.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error(what))?;
        match found {
            None => {
                return Err(Error::Config(format!(
                    "capture: there is no table `{}` in this database{}; create it first, or check the name (case-sensitive)",
                    shown(c),
                    if c.schema.is_some() {
                        ""
                    } else {
                        " (on the search_path)"
                    }
                )));
            }
            Some((kind, _)) if kind != "r" && kind != "p" => {
                return Err(Error::Config(format!(
                    "capture: `{}` is not a table (a view or another relation); capture the table underneath",
                    shown(c)
                )));
            }
            Some((_, false)) => {
                return Err(Error::Config(format!(
                    "capture: the table `{}` has no column `{}`; name the id column with `.id(..)` (`--id`)",
                    shown(c),
                    c.id
                )));
            }
            Some(_) => {}
        }
        sqlx::raw_sql(super::POSTGRES_FUNCTION)
            .execute(&mut *tx)
            .await
            .map_err(db_error(what))?;
        let ddl = format!(
            "DROP TRIGGER IF EXISTS {trigger} ON {target};
             CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {target}
                 FOR EACH ROW EXECUTE FUNCTION eventbus_capture({model}, {id}, {source});",
            trigger = quote_ident(TRIGGER),
            model = quote_literal(&c.model),
            id = quote_literal(&c.id),
            source = quote_literal(&c.source_attribute()),
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
            .execute(&mut *tx)
            .await
            .map_err(db_error(what))?;
        tx.commit().await.map_err(db_error(what))?;
        tracing::info!(table = %shown(c), model = %c.model, "change capture applied");
        Ok(())
    }

    pub(super) async fn drop(pool: &PgPool, c: &Capture) -> Result<()> {
        let what = "cannot drop the change capture";
        let mut tx = pool.begin().await.map_err(db_error(what))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(crate::outbox::postgres::MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db_error(what))?;
        let target = target(c);
        let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass($1::text) IS NOT NULL")
            .bind(&target)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error(what))?;
        if exists {
            let ddl = format!(
                "DROP TRIGGER IF EXISTS {} ON {target}",
                quote_ident(TRIGGER)
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
                .execute(&mut *tx)
                .await
                .map_err(db_error(what))?;
        }
        tx.commit().await.map_err(db_error(what))?;
        tracing::info!(table = %shown(c), "change capture dropped");
        Ok(())
    }

    pub(super) async fn set_actor(
        conn: &mut sqlx::PgConnection,
        actor: Option<&str>,
    ) -> Result<()> {
        sqlx::query("SELECT set_config('eventbus.actor', $1, true)")
            .bind(actor.unwrap_or(""))
            .execute(conn)
            .await
            .map_err(db_error("cannot set the capture actor"))?;
        Ok(())
    }
}

#[cfg(feature = "sqlite")]
mod lite {
    use sqlx::SqlitePool;

    use super::{ACTOR_TABLE, Capture, TRIGGER, quote_ident, quote_literal};
    use crate::error::{Error, Result};
    use crate::outbox::db_error;

    /// Columns of a captured table the `record_change` trigger can compare.
    const SQLITE_MAX_COLUMNS: usize = 100;

    /// The actor's table: at most one row, written inside the transaction
    /// that makes the changes.
    const ACTOR_DDL: &str = "CREATE TABLE IF NOT EXISTS eventbus_capture_actor (
        one   INTEGER PRIMARY KEY CHECK (one = 1),
        actor TEXT NOT NULL
    )";

    /// A UUIDv7 as text: 48 bits of Unix milliseconds, then random bits.
    const UUID_V7: &str = "lower(substr(printf('%012x', CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)), 1, 8) \
        || '-' || substr(printf('%012x', CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)), 9, 4) \
        || '-7' || substr(hex(randomblob(2)), 2, 3) \
        || '-' || substr('89ab', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2, 3) \
        || '-' || hex(randomblob(6)))";

    const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

    fn trigger_name(c: &Capture, op: &str) -> String {
        quote_ident(&format!("{TRIGGER}_{}_{op}", c.table))
    }

    /// The statements of one trigger: the outbox row, then its payload (the
    /// row's own `id`, read back, so the two ids cannot differ).
    fn body(c: &Capture, kind: &str, row: &str, changed: Option<&str>) -> String {
        let id = format!("{row}.{}", quote_ident(&c.id));
        let data = match changed {
            None => format!(
                "json_object('id', {id}, 'model_name', {})",
                quote_literal(&c.model)
            ),
            Some(changed) => format!(
                "json_object('id', {id}, 'model_name', {}, 'changed', json({changed}))",
                quote_literal(&c.model)
            ),
        };
        format!(
            "INSERT INTO eventbus_outbox (id, event_type, payload, key, created_at, available_at)
    VALUES ({UUID_V7}, '{kind}', '{{}}', NULLIF(CAST({id} AS TEXT), ''), {NOW_MS}, {NOW_MS});
    UPDATE eventbus_outbox SET payload = json_patch(json_object(
        'specversion', '1.0',
        'id', id,
        'source', {source},
        'type', event_type,
        'time', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
        'datacontenttype', 'application/json',
        'subject', key,
        'data', {data}),
        json_object('actor', (SELECT NULLIF(actor, '') FROM eventbus_capture_actor WHERE one = 1)))
    WHERE seq = last_insert_rowid();",
            source = quote_literal(&c.source_attribute()),
        )
    }

    async fn drop_triggers(conn: &mut sqlx::SqliteConnection, c: &Capture) -> Result<()> {
        for op in ["insert", "update", "delete"] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP TRIGGER IF EXISTS {}",
                trigger_name(c, op)
            )))
            .execute(&mut *conn)
            .await
            .map_err(db_error("cannot drop the change capture"))?;
        }
        Ok(())
    }

    fn no_schema(c: &Capture) -> Result<()> {
        if c.schema.is_some() {
            return Err(Error::Config(
                "capture: `.schema(..)` is for PostgreSQL; SQLite triggers write only into their own database, so capture tables of the main database".into(),
            ));
        }
        Ok(())
    }

    pub(super) async fn apply(pool: &SqlitePool, c: &Capture) -> Result<()> {
        no_schema(c)?;
        let what = "cannot apply the change capture";
        let mut tx = pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error(what))?;
        sqlx::raw_sql(crate::outbox::SQLITE_SCHEMA)
            .execute(&mut *tx)
            .await
            .map_err(db_error(what))?;
        sqlx::raw_sql(ACTOR_DDL)
            .execute(&mut *tx)
            .await
            .map_err(db_error(what))?;
        let kind: Option<(String,)> = sqlx::query_as(
            "SELECT type FROM sqlite_schema WHERE name = ?1 AND type IN ('table', 'view')",
        )
        .bind(&c.table)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error(what))?;
        match kind.as_ref().map(|(k,)| k.as_str()) {
            None => {
                return Err(Error::Config(format!(
                    "capture: there is no table `{}` in this database; create it first, or check the name",
                    c.table
                )));
            }
            Some("table") => {}
            Some(_) => {
                return Err(Error::Config(format!(
                    "capture: `{}` is a view, not a table; capture the table underneath",
                    c.table
                )));
            }
        }
        let columns: Vec<(String,)> =
            sqlx::query_as("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
                .bind(&c.table)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error(what))?;
        let columns: Vec<String> = columns.into_iter().map(|(n,)| n).collect();
        if !columns.contains(&c.id) {
            return Err(Error::Config(format!(
                "capture: the table `{}` has no column `{}`; name the id column with `.id(..)` (`--id`)",
                c.table, c.id
            )));
        }
        if columns.len() > SQLITE_MAX_COLUMNS {
            return Err(Error::Config(format!(
                "capture: the table `{}` has {} columns; SQLite capture compares at most {SQLITE_MAX_COLUMNS}",
                c.table,
                columns.len()
            )));
        }
        drop_triggers(&mut tx, c).await?;

        let table = quote_ident(&c.table);
        let differs: Vec<String> = columns
            .iter()
            .map(|col| format!("OLD.{q} IS NOT NEW.{q}", q = quote_ident(col)))
            .collect();
        let changed = format!(
            "(SELECT json_group_array(value) FROM json_each(json_array({})) WHERE type = 'text')",
            columns
                .iter()
                .map(|col| format!(
                    "CASE WHEN OLD.{q} IS NOT NEW.{q} THEN {l} END",
                    q = quote_ident(col),
                    l = quote_literal(col)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let ddl = format!(
            "CREATE TRIGGER {insert} AFTER INSERT ON {table}
BEGIN
    {insert_body}
END;
CREATE TRIGGER {update} AFTER UPDATE ON {table}
WHEN {when}
BEGIN
    {update_body}
END;
CREATE TRIGGER {delete} AFTER DELETE ON {table}
BEGIN
    {delete_body}
END;",
            insert = trigger_name(c, "insert"),
            update = trigger_name(c, "update"),
            delete = trigger_name(c, "delete"),
            insert_body = body(c, "record_create", "NEW", None),
            update_body = body(c, "record_change", "NEW", Some(&changed)),
            delete_body = body(c, "record_delete", "OLD", None),
            when = differs.join(" OR "),
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
            .execute(&mut *tx)
            .await
            .map_err(db_error(what))?;
        tx.commit().await.map_err(db_error(what))?;
        tracing::info!(table = %c.table, model = %c.model, "change capture applied");
        Ok(())
    }

    pub(super) async fn drop(pool: &SqlitePool, c: &Capture) -> Result<()> {
        no_schema(c)?;
        let mut tx = pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error("cannot drop the change capture"))?;
        drop_triggers(&mut tx, c).await?;
        tx.commit()
            .await
            .map_err(db_error("cannot drop the change capture"))?;
        tracing::info!(table = %c.table, "change capture dropped");
        Ok(())
    }

    pub(super) async fn set_actor(
        conn: &mut sqlx::SqliteConnection,
        actor: Option<&str>,
    ) -> Result<()> {
        let done = match actor {
            Some(actor) => {
                sqlx::query(
                    "INSERT INTO eventbus_capture_actor (one, actor) VALUES (1, ?1) \
                     ON CONFLICT (one) DO UPDATE SET actor = excluded.actor",
                )
                .bind(actor)
                .execute(conn)
                .await
            }
            None => {
                sqlx::query("DELETE FROM eventbus_capture_actor")
                    .execute(conn)
                    .await
            }
        };
        match done {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_database_error()
                    .is_some_and(|d| d.message().contains("no such table")) =>
            {
                Err(Error::Config(format!(
                    "capture: the table `{ACTOR_TABLE}` does not exist; apply a capture first (`Capture::table(..).apply(&pool)`)"
                )))
            }
            Err(e) => Err(db_error("cannot set the capture actor")(e)),
        }
    }
}

/// A connection or transaction the capture actor can be set on:
/// `sqlx::Transaction` or connection of PostgreSQL or SQLite. Sealed.
pub trait ActorConnection: sealed::Sealed + Send {
    #[doc(hidden)]
    fn set_capture_actor<'a>(&'a mut self, actor: Option<&'a str>) -> BoxFuture<'a, Result<()>>;
}

#[cfg(feature = "postgres")]
impl ActorConnection for sqlx::PgConnection {
    fn set_capture_actor<'a>(&'a mut self, actor: Option<&'a str>) -> BoxFuture<'a, Result<()>> {
        Box::pin(pg::set_actor(self, actor))
    }
}
#[cfg(feature = "postgres")]
impl ActorConnection for sqlx::Transaction<'_, sqlx::Postgres> {
    fn set_capture_actor<'a>(&'a mut self, actor: Option<&'a str>) -> BoxFuture<'a, Result<()>> {
        Box::pin(pg::set_actor(self, actor))
    }
}
#[cfg(feature = "sqlite")]
impl ActorConnection for sqlx::SqliteConnection {
    fn set_capture_actor<'a>(&'a mut self, actor: Option<&'a str>) -> BoxFuture<'a, Result<()>> {
        Box::pin(lite::set_actor(self, actor))
    }
}
#[cfg(feature = "sqlite")]
impl ActorConnection for sqlx::Transaction<'_, sqlx::Sqlite> {
    fn set_capture_actor<'a>(&'a mut self, actor: Option<&'a str>) -> BoxFuture<'a, Result<()>> {
        Box::pin(lite::set_actor(self, actor))
    }
}

/// Sets who makes the changes of the current transaction (`None` clears
/// it): the captured events carry it as the CloudEvents extension `actor`.
///
/// - PostgreSQL: `set_config('eventbus.actor', actor, true)`, local to the
///   transaction (the same as `SET LOCAL eventbus.actor = '...'`); it ends
///   with the transaction, whether it commits or rolls back. Outside a
///   transaction it lasts one statement only.
/// - SQLite, which has no session settings: a row in `eventbus_capture_actor`,
///   written in the transaction. A rollback takes it away with everything
///   else; a commit would keep it for the transactions after, so commit
///   with [`commit`] (or call `set_actor(&mut tx, None)` last). Use it
///   inside a transaction (`BEGIN IMMEDIATE`, so no other writer can come in
///   between).
///
/// An actor with a control character is an [`Error::Config`]; an empty one
/// is `None`.
pub async fn set_actor<C>(conn: &mut C, actor: Option<&str>) -> Result<()>
where
    C: ActorConnection + ?Sized,
{
    let actor = actor.filter(|a| !a.is_empty());
    if let Some(a) = actor
        && (a.len() > 1_000 || a.chars().any(char::is_control))
    {
        return Err(Error::Config(format!(
            "capture: the actor `{}` has a control character or is longer than 1000 bytes",
            a.escape_debug()
        )));
    }
    conn.set_capture_actor(actor).await
}

/// [`set_actor`] with the actor of the current task ([`current_actor`],
/// set by [`with_actor`]); clears it when there is none.
pub async fn set_actor_from_task<C>(conn: &mut C) -> Result<()>
where
    C: ActorConnection + ?Sized,
{
    let actor = current_actor();
    set_actor(conn, actor.as_deref()).await
}

/// A transaction that [`commit`] can commit. Sealed.
pub trait ActorTransaction: sealed::Sealed + Send + Sized {
    #[doc(hidden)]
    fn commit_without_actor<'t>(self) -> BoxFuture<'t, Result<()>>
    where
        Self: 't;
}

#[cfg(feature = "postgres")]
impl ActorTransaction for sqlx::Transaction<'_, sqlx::Postgres> {
    fn commit_without_actor<'t>(self) -> BoxFuture<'t, Result<()>>
    where
        Self: 't,
    {
        // `set_config(.., true)` ends with the transaction.
        Box::pin(async move {
            self.commit()
                .await
                .map_err(db_error("cannot commit the transaction"))
        })
    }
}

#[cfg(feature = "sqlite")]
impl ActorTransaction for sqlx::Transaction<'_, sqlx::Sqlite> {
    fn commit_without_actor<'t>(mut self) -> BoxFuture<'t, Result<()>>
    where
        Self: 't,
    {
        Box::pin(async move {
            lite::set_actor(&mut self, None).await?;
            self.commit()
                .await
                .map_err(db_error("cannot commit the transaction"))
        })
    }
}

/// Commits `tx` after clearing the capture actor (SQLite, where it would
/// otherwise outlive the transaction; on PostgreSQL a plain commit).
pub async fn commit<T: ActorTransaction>(tx: T) -> Result<()> {
    tx.commit_without_actor().await
}

tokio::task_local! {
    static ACTOR: Option<Arc<str>>;
}

/// Runs `fut` with `actor` as the task's actor (read by [`current_actor`]
/// and [`set_actor_from_task`]): what a web layer wraps a request in once it
/// knows the user. Tasks spawned inside do not inherit it.
pub fn with_actor<F: Future>(actor: impl Into<String>, fut: F) -> impl Future<Output = F::Output> {
    let actor: String = actor.into();
    ACTOR.scope((!actor.is_empty()).then(|| Arc::from(actor)), fut)
}

/// The actor set by the enclosing [`with_actor`], if any.
pub fn current_actor() -> Option<String> {
    ACTOR
        .try_with(|a| a.as_deref().map(str::to_owned))
        .ok()
        .flatten()
}

/// A tower layer (for axum, or any `http` service) that runs each request
/// [`with_actor`] the actor `who` finds in it (the user of a session, a
/// header set by the gateway, ...), so that [`set_actor_from_task`] in the
/// handler records it with the changes the request makes (feature `http`).
///
/// ```
/// use eventbus::outbox::capture::ActorLayer;
/// let layer = ActorLayer::new(|req: &http::Request<axum::body::Body>| {
///     req.headers()
///         .get("x-user-id")
///         .and_then(|v| v.to_str().ok())
///         .map(|id| format!("user:{id}"))
/// });
/// let app: axum::Router = axum::Router::new().layer(layer);
/// ```
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[derive(Clone)]
pub struct ActorLayer<F> {
    who: F,
}

#[cfg(feature = "http")]
impl<F> std::fmt::Debug for ActorLayer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorLayer").finish_non_exhaustive()
    }
}

#[cfg(feature = "http")]
impl<F> ActorLayer<F> {
    /// A layer taking each request's actor from `who` (`None`: no actor).
    pub fn new<B>(who: F) -> Self
    where
        F: Fn(&http::Request<B>) -> Option<String> + Clone,
    {
        Self { who }
    }
}

#[cfg(feature = "http")]
impl<S, F: Clone> tower::Layer<S> for ActorLayer<F> {
    type Service = ActorService<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        ActorService {
            inner,
            who: self.who.clone(),
        }
    }
}

/// The service of [`ActorLayer`].
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[derive(Clone)]
pub struct ActorService<S, F> {
    inner: S,
    who: F,
}

#[cfg(feature = "http")]
impl<S, F> std::fmt::Debug for ActorService<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorService").finish_non_exhaustive()
    }
}

#[cfg(feature = "http")]
impl<S, F, B> tower::Service<http::Request<B>> for ActorService<S, F>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
    F: Fn(&http::Request<B>) -> Option<String>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, std::result::Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let actor = (self.who)(&req);
        let fut = self.inner.call(req);
        match actor {
            Some(actor) => Box::pin(with_actor(actor, fut)),
            None => Box::pin(fut),
        }
    }
}
