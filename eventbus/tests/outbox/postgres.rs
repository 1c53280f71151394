//! The outbox on a real PostgreSQL (a private cluster started by `testkit`).
#![cfg(feature = "postgres")]

use std::time::Duration;

use crate::common::*;
use eventbus::outbox::{self, RelayOptions};

/// Not a test: the body of the child relay processes (see `Child::spawn`).
#[tokio::test]
#[ignore = "run by the multi-process tests as a child relay"]
async fn child_relay() {
    child_main().await;
}

#[tokio::test]
async fn rollback_sends_nothing_and_commit_sends_exactly_once() {
    rollback_sends_nothing_commit_sends_once(Db::postgres().await).await;
}

#[tokio::test]
async fn a_permanently_failing_event_ends_failed_while_others_flow() {
    failing_event_ends_failed_while_others_flow(Db::postgres().await).await;
}

#[tokio::test]
async fn scheduled_rows_are_not_sent_before_available_at() {
    scheduled_rows_wait_for_available_at(Db::postgres().await).await;
}

#[tokio::test]
async fn rows_of_one_key_are_published_in_insertion_order_by_concurrent_relays() {
    rows_of_a_key_go_out_in_order(Db::postgres().await, 3).await;
}

#[tokio::test]
async fn a_failing_row_holds_back_the_rows_of_its_key_until_it_is_failed() {
    a_failing_row_holds_back_its_key_until_it_fails(Db::postgres().await).await;
}

#[tokio::test]
async fn two_relay_processes_deliver_10000_rows_once_each() {
    two_relay_processes(Db::postgres().await, "postgres::child_relay", true).await;
}

#[tokio::test]
async fn a_relay_killed_after_claiming_loses_nothing() {
    killed_relay_loses_nothing(Db::postgres().await, "postgres::child_relay", "hang").await;
}

#[tokio::test]
async fn a_relay_killed_after_publishing_before_commit_loses_nothing() {
    killed_relay_loses_nothing(
        Db::postgres().await,
        "postgres::child_relay",
        "write-then-hang",
    )
    .await;
}

/// Transport down: rows stay pending with growing attempts, the relay holds
/// no lock while it waits, and everything goes out once it is back.
#[tokio::test]
async fn transport_outage_holds_no_locks_and_loses_nothing() {
    let db = Db::postgres().await;
    let Db::Pg(pool, _) = &db else { unreachable!() };
    let recorder = Recorder::default();
    let bus = bus_on(recorder.clone()).await;
    let relay = Running::start(
        bus.clone(),
        fast(RelayOptions::new(db.database()).max_attempts(1_000)),
    );
    let ids = transport_down_then_back(&db, &recorder, &bus).await;

    // Sample the locks while the relay backs off: the outbox rows can be
    // locked by someone else (NOWAIT) and the relay holds no lock on the table.
    let mut free = 0;
    let mut relation_locks = 0;
    const SAMPLES: usize = 30;
    for _ in 0..SAMPLES {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL lock_timeout = '1ms'")
            .execute(&mut *tx)
            .await
            .unwrap();
        let locked = sqlx::query("SELECT seq FROM eventbus_outbox FOR UPDATE NOWAIT")
            .fetch_all(&mut *tx)
            .await;
        tx.rollback().await.unwrap();
        if locked.is_ok() {
            free += 1;
        }
        let (others,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE c.relname = 'eventbus_outbox' AND l.pid <> pg_backend_pid()",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if others > 0 {
            relation_locks += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        free >= SAMPLES * 8 / 10,
        "the relay held row locks in {} of {SAMPLES} samples during the outage",
        SAMPLES - free
    );
    assert!(
        relation_locks <= SAMPLES * 2 / 10,
        "the relay held locks on the table in {relation_locks} of {SAMPLES} samples"
    );
    let (idle_in_tx,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND state = 'idle in transaction' AND pid <> pg_backend_pid()",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(idle_in_tx <= 1, "{idle_in_tx} transactions left open");

    recorder.set_down(false);
    all_delivered_once(&db, &recorder, &ids).await;
    relay.stop().await;
}

/// The migration is idempotent and safe to run from several processes at once.
#[tokio::test]
async fn migrations_are_idempotent_and_concurrent_safe() {
    let db = Db::postgres().await;
    let database = db.database();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let d = database.clone();
            tokio::spawn(async move { outbox::migrate(d).await })
        })
        .collect();
    for r in runs {
        r.await.unwrap().unwrap();
    }
    let Db::Pg(pool, _) = &db else { unreachable!() };
    let (triggers,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_trigger WHERE tgname = 'eventbus_outbox_notify'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(triggers, 1);
}

/// A NOTIFY wakes an idle relay at once, long before its poll interval.
#[tokio::test]
async fn notify_wakes_an_idle_relay() {
    let db = Db::postgres().await;
    let recorder = Recorder::default();
    let bus = bus_on(recorder.clone()).await;
    let relay = Running::start(
        bus.clone(),
        RelayOptions::new(db.database()).poll_interval(Duration::from_secs(60)),
    );
    // Let it go idle (its first look finds nothing).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    db.publish(&bus, &[Item::Note(1)], true).await;
    assert!(
        eventually(Duration::from_secs(10), || async { recorder.len() == 1 }).await,
        "an idle relay did not wake on NOTIFY"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    relay.stop().await;
}

/// Published rows older than the retention are deleted; failed and pending rows stay.
#[tokio::test]
async fn retention_cleanup_deletes_old_published_rows() {
    let db = Db::postgres().await;
    let recorder = Recorder::default();
    recorder.poison(3);
    let bus = bus_on(recorder.clone()).await;
    let items: Vec<Item> = (0..10).map(Item::Note).collect();
    db.publish(&bus, &items, true).await;
    let relay = Running::start(
        bus.clone(),
        fast(RelayOptions::new(db.database()).max_attempts(1))
            .retention(Some(Duration::from_millis(200)))
            .cleanup_interval(Duration::from_millis(100)),
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            let c = db.counts().await;
            (c.pending, c.published, c.failed) == (0, 0, 1)
        })
        .await,
        "published rows were not cleaned up: {:?}",
        db.counts().await
    );
    relay.stop().await;
    assert_eq!(recorder.len(), 9);
}

/// Without the table, the relay stops with an error that says how to fix it.
#[tokio::test]
async fn a_missing_table_is_a_clear_error() {
    let server = testkit::PostgresServer::shared().unwrap();
    let url = server.create_database().unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let bus = bus_on(Recorder::default()).await;
    let relay = outbox::Relay::new(bus, RelayOptions::new(&pool));
    let err = relay
        .run(tokio_util::sync::CancellationToken::new())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("eventbus::outbox::migrate"), "{text}");
}
