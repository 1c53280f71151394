//! Change capture (`eventbus::outbox::capture`): triggers record the changes
//! other programs make (`psql` on PostgreSQL, Python's `sqlite3` on SQLite)
//! as `record_*` CloudEvents in the outbox, with the actor; the relay
//! publishes them to a typed handler.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use eventbus::codec::Attributes;
use eventbus::outbox::RelayOptions;
use eventbus::outbox::capture::{self, Capture};
use eventbus::testing::TestBus;
use eventbus::{Bus, Context, Error, Event, handler};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::common::*;

/// Our catalogue's `record_change`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("record_change")]
pub struct RecordChange {
    pub id: serde_json::Value,
    pub model_name: String,
    #[serde(default)]
    pub changed: Vec<String>,
}

/// One change [`on_record_change`] saw: `(id, model_name, changed, actor)`.
type Seen = (serde_json::Value, String, Vec<String>, Option<String>);

/// What [`on_record_change`] saw.
#[derive(Default)]
struct ChangeLog(Mutex<Vec<Seen>>);

#[handler]
async fn on_record_change(event: RecordChange, ctx: Context) {
    let actor = ctx.extension("actor").map(|a| a.to_string());
    ctx.state::<Arc<ChangeLog>>()
        .0
        .lock()
        .push((event.id, event.model_name, event.changed, actor));
}

/// One captured outbox row, decoded through the validator.
#[derive(Debug)]
struct Captured {
    event_type: String,
    source: String,
    subject: Option<String>,
    actor: Option<String>,
    data: serde_json::Value,
}

/// The rows of the outbox, oldest first: `(event_type, id, key, payload)`.
async fn outbox_rows(db: &Db) -> Vec<(String, String, Option<String>, String)> {
    match db {
        #[cfg(feature = "postgres")]
        Db::Pg(pool, _) => sqlx::query_as(
            "SELECT event_type, id::text, key, payload::text FROM eventbus_outbox ORDER BY seq",
        )
        .fetch_all(pool)
        .await
        .expect("outbox rows"),
        #[cfg(feature = "sqlite")]
        Db::Sqlite(pool, ..) => {
            sqlx::query_as("SELECT event_type, id, key, payload FROM eventbus_outbox ORDER BY seq")
                .fetch_all(pool)
                .await
                .expect("outbox rows")
        }
    }
}

/// Every captured row, each checked to be a complete valid CloudEvent whose
/// columns match its attributes.
async fn captured(db: &Db) -> Vec<Captured> {
    let mut out = Vec::new();
    for (event_type, id, key, payload) in outbox_rows(db).await {
        let a = Attributes::parse(payload.as_bytes())
            .unwrap_or_else(|e| panic!("not a valid CloudEvent ({e}): {payload}"));
        assert_eq!(a.specversion, "1.0", "{payload}");
        assert_eq!(a.ty, event_type, "{payload}");
        assert_eq!(a.id, id, "{payload}");
        let uuid = uuid::Uuid::parse_str(&a.id).expect("a uuid id");
        assert_eq!(uuid.get_version_num(), 7, "a UUIDv7: {payload}");
        assert_eq!(a.datacontenttype.as_deref(), Some("application/json"));
        let time = a.time.as_deref().expect("time");
        assert!(time.ends_with('Z'), "UTC: {time}");
        assert!(
            eventbus::codec::parse_time(time).is_some(),
            "RFC 3339: {time}"
        );
        assert_eq!(a.subject.as_deref(), key.as_deref(), "key = subject");
        let actor = a
            .extensions
            .iter()
            .find(|(n, _)| n == "actor")
            .map(|(_, raw)| serde_json::from_str::<String>(raw.get()).expect("a string actor"));
        let data = a.data_as().expect("JSON data");
        out.push(Captured {
            event_type,
            source: a.source.into_owned(),
            subject: a.subject.map(|s| s.into_owned()),
            actor,
            data,
        });
    }
    out
}

/// The CloudEvents types of the outbox rows, oldest first.
async fn types(db: &Db) -> Vec<String> {
    outbox_rows(db).await.into_iter().map(|r| r.0).collect()
}

/// A `Config` error in one sentence, naming `needle`.
fn assert_config_error(result: eventbus::Result<()>, needle: &str) {
    match result {
        Err(Error::Config(message)) => {
            assert!(message.contains(needle), "{message}");
            assert!(!message.contains('\n'), "one line: {message}");
        }
        other => panic!("expected a configuration error about {needle}, got {other:?}"),
    }
}

/// The relay publishes captured rows to a memory bus whose typed
/// `#[handler]` for `record_change` decodes them.
async fn relay_delivers_to_a_typed_handler(db: &Db, change: impl Fn()) {
    let log = Arc::new(ChangeLog::default());
    // The registered handler (`on_record_change`), on a private memory bus.
    let test = TestBus::start(Bus::builder().service("capture-test").state(log.clone()))
        .await
        .expect("test bus");
    let relay = Running::start(test.bus().clone(), fast(RelayOptions::new(db.database())));
    change();
    assert!(
        eventually(Duration::from_secs(20), || async {
            !log.0.lock().is_empty()
        })
        .await,
        "the handler never received the captured change"
    );
    relay.stop().await;
    test.settle().await;
    let seen = log.0.lock().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (id, model, changed, actor) = &seen[0];
    assert_eq!(id, &serde_json::json!(1));
    assert_eq!(model, "Review");
    assert_eq!(changed, &["title".to_owned()]);
    assert_eq!(actor.as_deref(), Some("user:7"));
    assert_eq!(
        db.counts().await.published as usize,
        outbox_rows(db).await.len()
    );
    test.stop().await.expect("stop");
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    /// Runs `script` with the server's `psql` on `db`; panics with its stderr if it fails.
    fn psql(db: &Db, script: &str) {
        let server = testkit::PostgresServer::shared().expect("PostgreSQL");
        let out = server
            .psql(db.url())
            .args(["-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed on {script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn with_review() -> Db {
        let db = Db::postgres().await;
        let Db::Pg(pool, _) = &db else { unreachable!() };
        sqlx::query(
            "CREATE TABLE review (id BIGINT PRIMARY KEY, title TEXT NOT NULL, rating INT, extra JSON)",
        )
        .execute(pool)
        .await
        .expect("review table");
        db
    }

    #[tokio::test]
    async fn changes_made_by_psql_are_captured_with_the_actor() {
        let db = with_review().await;
        let Db::Pg(pool, _) = &db else { unreachable!() };
        let review = Capture::table("review").model("Review").id("id");
        review.apply(pool).await.expect("apply");
        review.apply(pool).await.expect("apply again");

        psql(
            &db,
            "INSERT INTO review (id, title, rating) VALUES (1, 'a', 3)",
        );
        let rows = captured(&db).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].event_type, "record_create");
        assert_eq!(
            rows[0].data,
            serde_json::json!({"id": 1, "model_name": "Review"})
        );
        assert_eq!(rows[0].subject.as_deref(), Some("1"));
        assert_eq!(rows[0].source, "/review");
        assert_eq!(rows[0].actor, None);

        // An update with the actor set in its transaction: one record_change.
        psql(
            &db,
            "BEGIN; SET LOCAL eventbus.actor = 'user:42'; \
             UPDATE review SET title = 'b', extra = '{\"x\": 1}' WHERE id = 1; COMMIT;",
        );
        let rows = captured(&db).await;
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[1].event_type, "record_change");
        assert_eq!(rows[1].actor.as_deref(), Some("user:42"));
        assert_eq!(
            rows[1].data,
            serde_json::json!({"id": 1, "model_name": "Review", "changed": ["title", "extra"]})
        );

        // Changing nothing records nothing; neither does a rolled-back change.
        psql(
            &db,
            "UPDATE review SET title = 'b', extra = '{\"x\": 1}' WHERE id = 1",
        );
        psql(
            &db,
            "BEGIN; UPDATE review SET rating = 5 WHERE id = 1; ROLLBACK;",
        );
        assert_eq!(types(&db).await.len(), 2);

        // Applied once more: still one row per change, and the actor of an
        // earlier transaction is gone.
        review.apply(pool).await.expect("apply a third time");
        psql(&db, "UPDATE review SET rating = 4 WHERE id = 1");
        let rows = captured(&db).await;
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[2].data["changed"], serde_json::json!(["rating"]));
        assert_eq!(rows[2].actor, None);

        // The actor from Rust, through the task-local.
        let mut tx = pool.begin().await.unwrap();
        capture::with_actor("user:7", capture::set_actor_from_task(&mut *tx))
            .await
            .expect("set the actor");
        sqlx::query("UPDATE review SET rating = 1 WHERE id = 1")
            .execute(&mut *tx)
            .await
            .unwrap();
        capture::commit(tx).await.expect("commit");
        sqlx::query("UPDATE review SET rating = 2 WHERE id = 1")
            .execute(pool)
            .await
            .unwrap();
        let rows = captured(&db).await;
        assert_eq!(rows.len(), 5, "{rows:?}");
        assert_eq!(rows[3].actor.as_deref(), Some("user:7"));
        assert_eq!(rows[4].actor, None, "the actor ended with its transaction");

        psql(&db, "DELETE FROM review WHERE id = 1");
        let rows = captured(&db).await;
        assert_eq!(rows[5].event_type, "record_delete");
        assert_eq!(
            rows[5].data,
            serde_json::json!({"id": 1, "model_name": "Review"})
        );

        // Dropped (twice: idempotent): changes are no longer recorded.
        review.drop(pool).await.expect("drop");
        review.drop(pool).await.expect("drop again");
        psql(
            &db,
            "INSERT INTO review (id, title) VALUES (2, 'c'); UPDATE review SET title = 'd'",
        );
        assert_eq!(types(&db).await.len(), 6);
    }

    #[tokio::test]
    async fn a_text_id_a_custom_source_and_another_schema() {
        let db = Db::postgres().await;
        let Db::Pg(pool, _) = &db else { unreachable!() };
        sqlx::raw_sql(
            "CREATE SCHEMA shop; \
             CREATE TABLE shop.\"Tag\" (uid UUID PRIMARY KEY DEFAULT gen_random_uuid(), name TEXT)",
        )
        .execute(pool)
        .await
        .unwrap();
        Capture::table("Tag")
            .schema("shop")
            .model("Tag")
            .id("uid")
            .source("tags")
            .apply(pool)
            .await
            .expect("apply");
        psql(&db, "INSERT INTO shop.\"Tag\" (name) VALUES ('x')");
        let rows = captured(&db).await;
        assert_eq!(rows.len(), 1);
        let uid = rows[0].data["id"]
            .as_str()
            .expect("a uuid is a JSON string");
        assert_eq!(rows[0].subject.as_deref(), Some(uid));
        assert_eq!(rows[0].source, "/tags");
    }

    #[tokio::test]
    async fn bad_names_are_configuration_errors() {
        let db = with_review().await;
        let Db::Pg(pool, _) = &db else { unreachable!() };
        assert_config_error(
            Capture::table("review; DROP TABLE review")
                .apply(pool)
                .await,
            "is not a valid table name",
        );
        assert_config_error(
            Capture::table("review").id("id\"").apply(pool).await,
            "is not a valid id column name",
        );
        assert_config_error(
            Capture::table("reviews").apply(pool).await,
            "no table `reviews`",
        );
        assert_config_error(
            Capture::table("review").id("uuid").apply(pool).await,
            "has no column `uuid`",
        );
        assert_config_error(
            Capture::table("review").model("Re\nview").apply(pool).await,
            "model",
        );
        // Nothing was created.
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM pg_trigger WHERE tgname = 'eventbus_capture'")
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn the_relay_publishes_captured_rows_to_a_typed_handler() {
        let db = with_review().await;
        let Db::Pg(pool, _) = &db else { unreachable!() };
        sqlx::query("INSERT INTO review (id, title) VALUES (1, 'a')")
            .execute(pool)
            .await
            .unwrap();
        Capture::table("review")
            .model("Review")
            .apply(pool)
            .await
            .expect("apply");
        relay_delivers_to_a_typed_handler(&db, || {
            psql(
                &db,
                "BEGIN; SET LOCAL eventbus.actor = 'user:7'; UPDATE review SET title = 'b'; COMMIT;",
            )
        })
        .await;
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;

    /// Runs `script` (SQL statements) with Python's own `sqlite3` module on
    /// the database file of `db`, in autocommit mode (the script says BEGIN).
    fn python(db: &Db, script: &str) {
        let path = db.url().strip_prefix("sqlite:").expect("a file URL");
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys\n\
                 c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)\n\
                 c.executescript(sys.argv[2])\n\
                 c.close()",
                path,
                script,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run python3 (Python 3 must be installed)");
        assert!(
            out.status.success(),
            "python3 failed on {script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn with_review() -> Db {
        let db = Db::sqlite().await;
        let Db::Sqlite(pool, ..) = &db else {
            unreachable!()
        };
        sqlx::query(
            "CREATE TABLE review (id INTEGER PRIMARY KEY, title TEXT NOT NULL, rating INTEGER)",
        )
        .execute(pool)
        .await
        .expect("review table");
        db
    }

    #[tokio::test]
    async fn changes_made_by_python_are_captured_with_the_actor() {
        let db = with_review().await;
        let Db::Sqlite(pool, ..) = &db else {
            unreachable!()
        };
        let review = Capture::table("review").model("Review").id("id");
        review.apply(pool).await.expect("apply");
        review.apply(pool).await.expect("apply again");

        python(
            &db,
            "INSERT INTO review (id, title, rating) VALUES (1, 'a', 3)",
        );
        python(&db, "UPDATE review SET title = 'b' WHERE id = 1");
        let rows = captured(&db).await;
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].event_type, "record_create");
        assert_eq!(
            rows[0].data,
            serde_json::json!({"id": 1, "model_name": "Review"})
        );
        assert_eq!(rows[0].subject.as_deref(), Some("1"));
        assert_eq!(rows[0].source, "/review");
        assert_eq!(rows[1].event_type, "record_change");
        assert_eq!(
            rows[1].data,
            serde_json::json!({"id": 1, "model_name": "Review", "changed": ["title"]})
        );
        assert_eq!(rows[1].actor, None);

        // Nothing changed, or rolled back: nothing recorded.
        python(&db, "UPDATE review SET title = 'b' WHERE id = 1");
        python(
            &db,
            "BEGIN; UPDATE review SET rating = 5 WHERE id = 1; ROLLBACK;",
        );
        assert_eq!(types(&db).await.len(), 2);

        // The actor, set in the transaction and cleared by capture::commit.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        capture::set_actor(&mut *tx, Some("user:42"))
            .await
            .expect("set the actor");
        sqlx::query("UPDATE review SET rating = 1, title = 'c' WHERE id = 1")
            .execute(&mut *tx)
            .await
            .unwrap();
        capture::commit(tx).await.expect("commit");
        // A rolled-back transaction takes its actor with it.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        capture::set_actor(&mut *tx, Some("user:666"))
            .await
            .unwrap();
        sqlx::query("UPDATE review SET rating = 9 WHERE id = 1")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        // Neither leaks into a later change by another program.
        python(&db, "UPDATE review SET rating = 2 WHERE id = 1");
        let rows = captured(&db).await;
        assert_eq!(rows.len(), 4, "{rows:?}");
        assert_eq!(rows[2].actor.as_deref(), Some("user:42"));
        assert_eq!(
            rows[2].data["changed"],
            serde_json::json!(["title", "rating"])
        );
        assert_eq!(
            rows[3].actor, None,
            "the actor did not outlive its transaction"
        );

        // Applied again: still one row per change.
        review.apply(pool).await.expect("apply a third time");
        python(&db, "DELETE FROM review WHERE id = 1");
        let rows = captured(&db).await;
        assert_eq!(rows.len(), 5, "{rows:?}");
        assert_eq!(rows[4].event_type, "record_delete");
        assert_eq!(
            rows[4].data,
            serde_json::json!({"id": 1, "model_name": "Review"})
        );

        review.drop(pool).await.expect("drop");
        review.drop(pool).await.expect("drop again");
        python(
            &db,
            "INSERT INTO review (id, title) VALUES (2, 'x'); UPDATE review SET title = 'y'",
        );
        assert_eq!(types(&db).await.len(), 5);
    }

    #[tokio::test]
    async fn a_text_id_is_a_json_string() {
        let db = Db::sqlite().await;
        let Db::Sqlite(pool, ..) = &db else {
            unreachable!()
        };
        sqlx::query("CREATE TABLE tag (code TEXT PRIMARY KEY, name TEXT)")
            .execute(pool)
            .await
            .unwrap();
        Capture::table("tag")
            .model("Tag")
            .id("code")
            .source("/tags")
            .apply(pool)
            .await
            .unwrap();
        python(&db, "INSERT INTO tag VALUES ('t-1', 'x')");
        let rows = captured(&db).await;
        assert_eq!(
            rows[0].data,
            serde_json::json!({"id": "t-1", "model_name": "Tag"})
        );
        assert_eq!(rows[0].source, "/tags");
    }

    #[tokio::test]
    async fn bad_names_are_configuration_errors() {
        let db = with_review().await;
        let Db::Sqlite(pool, ..) = &db else {
            unreachable!()
        };
        assert_config_error(
            Capture::table("review\"; DROP TABLE review; --")
                .apply(pool)
                .await,
            "is not a valid table name",
        );
        assert_config_error(Capture::table("nope").apply(pool).await, "no table `nope`");
        assert_config_error(
            Capture::table("review").id("code").apply(pool).await,
            "has no column `code`",
        );
        assert_config_error(
            Capture::table("review").schema("main").apply(pool).await,
            "`.schema(..)` is for PostgreSQL",
        );
    }

    #[tokio::test]
    async fn the_relay_publishes_captured_rows_to_a_typed_handler() {
        let db = with_review().await;
        let Db::Sqlite(pool, ..) = &db else {
            unreachable!()
        };
        sqlx::query("INSERT INTO review (id, title) VALUES (1, 'a')")
            .execute(pool)
            .await
            .unwrap();
        Capture::table("review")
            .model("Review")
            .apply(pool)
            .await
            .expect("apply");
        // The actor from a program: the same table set_actor writes.
        relay_delivers_to_a_typed_handler(&db, || {
            python(
                &db,
                "BEGIN IMMEDIATE; \
                 INSERT INTO eventbus_capture_actor (one, actor) VALUES (1, 'user:7'); \
                 UPDATE review SET title = 'b'; \
                 DELETE FROM eventbus_capture_actor; COMMIT;",
            )
        })
        .await;
    }
}
