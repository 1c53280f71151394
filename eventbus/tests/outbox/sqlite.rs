//! The outbox on SQLite (a file in a temporary directory).
#![cfg(feature = "sqlite")]

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
    rollback_sends_nothing_commit_sends_once(Db::sqlite().await).await;
}

#[tokio::test]
async fn a_permanently_failing_event_ends_failed_while_others_flow() {
    failing_event_ends_failed_while_others_flow(Db::sqlite().await).await;
}

#[tokio::test]
async fn scheduled_rows_are_not_sent_before_available_at() {
    scheduled_rows_wait_for_available_at(Db::sqlite().await).await;
}

#[tokio::test]
async fn rows_of_one_key_are_published_in_insertion_order() {
    rows_of_a_key_go_out_in_order(Db::sqlite().await, 2).await;
}

#[tokio::test]
async fn a_failing_row_holds_back_the_rows_of_its_key_until_it_is_failed() {
    a_failing_row_holds_back_its_key_until_it_fails(Db::sqlite().await).await;
}

#[tokio::test]
async fn two_relay_processes_deliver_10000_rows_once_each() {
    two_relay_processes(Db::sqlite().await, "sqlite::child_relay", false).await;
}

#[tokio::test]
async fn a_relay_killed_after_claiming_loses_nothing() {
    killed_relay_loses_nothing(Db::sqlite().await, "sqlite::child_relay", "hang").await;
}

#[tokio::test]
async fn a_relay_killed_after_publishing_before_commit_loses_nothing() {
    killed_relay_loses_nothing(Db::sqlite().await, "sqlite::child_relay", "write-then-hang").await;
}

#[tokio::test]
async fn transport_outage_loses_nothing() {
    let db = Db::sqlite().await;
    let recorder = Recorder::default();
    let bus = bus_on(recorder.clone()).await;
    let relay = Running::start(
        bus.clone(),
        fast(RelayOptions::new(db.database()).max_attempts(1_000)),
    );
    let ids = transport_down_then_back(&db, &recorder, &bus).await;
    // The app can write while the relay backs off: it does not keep the write lock.
    db.publish(&bus, &[Item::Note(10_000)], false).await;
    recorder.set_down(false);
    all_delivered_once(&db, &recorder, &ids).await;
    relay.stop().await;
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let db = Db::sqlite().await;
    outbox::migrate(db.database()).await.unwrap();
    outbox::migrate(db.database()).await.unwrap();
    assert_eq!(db.counts().await, outbox::Counts::default());
}

/// The outbox runs inside `bus.run()` with `BusBuilder::outbox_relay`.
#[tokio::test]
async fn the_relay_runs_inside_the_bus() {
    let db = Db::sqlite().await;
    let recorder = Recorder::default();
    let bus = eventbus::Bus::builder()
        .service("outbox-test")
        .without_registered()
        .transport(recorder.clone())
        .outbox_relay(fast(RelayOptions::new(db.database())))
        .build()
        .await
        .unwrap();
    let running = bus.spawn();
    db.publish(&bus, &[Item::Note(1), Item::Note(2)], true)
        .await;
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            recorder.len() == 2
        })
        .await
    );
    running.shutdown().await.unwrap();
}

/// The outbox gauges of a known backlog, and `/readyz`'s outbox check: a
/// relay that fails every round for longer than `relay_stuck_after` is stuck.
#[cfg(feature = "http")]
#[tokio::test]
async fn outbox_gauges_and_a_stuck_relay_in_readyz() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use std::time::Duration;

    let db = Db::sqlite().await;
    let recorder = Recorder::default();
    recorder.set_down(true);
    let bus = bus_on(recorder.clone()).await;
    db.publish(&bus, &[Item::Note(1), Item::Note(2), Item::Note(3)], true)
        .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let gauges = DebuggingRecorder::new();
    let snapshotter = gauges.snapshotter();
    {
        // The test's runtime runs on this thread only.
        let _local = metrics::set_default_local_recorder(&gauges);
        eventbus::metrics::sample_outbox_once(db.database()).await;
    }
    let snapshot = snapshotter.snapshot().into_vec();
    let gauge = |name: &str| {
        snapshot.iter().find_map(|(k, _, _, v)| match v {
            DebugValue::Gauge(g) if k.key().name() == name => Some(g.into_inner()),
            _ => None,
        })
    };
    assert_eq!(gauge(eventbus::metrics::OUTBOX_PENDING.name), Some(3.0));
    assert_eq!(gauge(eventbus::metrics::OUTBOX_FAILED.name), Some(0.0));
    let age = gauge(eventbus::metrics::OUTBOX_OLDEST_PENDING_AGE.name).unwrap();
    assert!((0.15..30.0).contains(&age), "{age}");

    let health = eventbus::health::Health::new(&bus).relay_stuck_after(Duration::from_millis(300));
    assert_eq!(health.check().await.1["outbox"], "ok", "no relay yet");
    let relay = Running::start(
        bus.clone(),
        fast(RelayOptions::new(db.database()).max_attempts(1_000)),
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            health.check().await.1["outbox"] != "ok"
        })
        .await,
        "the relay is reported stuck"
    );
    let (ready, checks) = health.check().await;
    assert!(!ready);
    let why = checks["outbox"].as_str().unwrap();
    assert!(why.contains("the transport looks down"), "{why}");
    recorder.set_down(false);
    assert!(
        eventually(Duration::from_secs(10), || async {
            health.check().await.1["outbox"] == "ok"
        })
        .await,
        "the relay is not stuck once the transport is back"
    );
    relay.stop().await;
}
