//! The outbox relay from a real PostgreSQL to real Redis Streams:
//! redis-server stopped while rows keep coming. (Two `eventbus relay`
//! processes over 10,000 rows: `eventbus-cli/tests/outbox_cli.rs`.)
#![cfg(all(feature = "postgres", feature = "redis"))]

use std::collections::HashMap;
use std::time::Duration;

use crate::common::*;
use eventbus::Bus;
use eventbus::codec::Attributes;
use eventbus::outbox::RelayOptions;
use testkit::RedisServer;

fn redis() -> RedisServer {
    RedisServer::start().expect("start redis-server (apt-get install -y redis-server)")
}

/// The CloudEvents ids in the stream of `event_type`, in stream order.
fn stream_ids(server: &RedisServer, event_type: &str) -> Vec<String> {
    let key = format!("{{eventbus}}:stream:{event_type}");
    let text = server.cmd(&["XRANGE", &key, "-", "+"]).expect("XRANGE");
    text.lines()
        .filter(|l| l.contains("\"specversion\""))
        .map(|l| {
            Attributes::parse(l.trim().as_bytes())
                .expect("a CloudEvent in the stream")
                .id
                .into_owned()
        })
        .collect()
}

fn count(ids: &[String]) -> HashMap<&str, usize> {
    ids.iter().fold(HashMap::new(), |mut m, id| {
        *m.entry(id.as_str()).or_default() += 1;
        m
    })
}

/// redis-server stopped: rows stay pending with growing attempts, the relay
/// holds no row lock while it waits; all go out once it is back.
#[tokio::test]
async fn redis_down_rows_stay_pending_without_locks_then_all_go_out() {
    let db = Db::postgres().await;
    let Db::Pg(pool, _) = &db else { unreachable!() };
    let mut server = redis();
    let bus = Bus::builder()
        .service("outbox-test")
        .without_registered()
        .connect(&server.url())
        .await
        .unwrap();
    let relay = Running::start(
        bus.clone(),
        fast(RelayOptions::new(db.database()).max_attempts(1_000))
            .publish_timeout(Duration::from_secs(2)),
    );
    // Warm up: the relay and Redis work.
    let first = db.publish(&bus, &[Item::Note(0)], true).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            stream_ids(&server, "outbox_test.note").len() == 1
        })
        .await
    );

    server.stop();
    let mut ids = first;
    for chunk in (1..=200).collect::<Vec<u64>>().chunks(50) {
        let items: Vec<Item> = chunk.iter().map(|n| Item::Note(*n)).collect();
        ids.extend(db.publish(&bus, &items, true).await);
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            db.pending_attempts().await.0 >= 2
        })
        .await,
        "attempts do not grow while Redis is down: {:?}",
        db.pending_attempts().await
    );
    let counts = db.counts().await;
    assert_eq!((counts.pending, counts.failed), (200, 0));

    // While the relay backs off, the rows are free to lock.
    let mut free = 0;
    const SAMPLES: usize = 20;
    for _ in 0..SAMPLES {
        let mut tx = pool.begin().await.unwrap();
        let locked = sqlx::query("SELECT seq FROM eventbus_outbox FOR UPDATE NOWAIT")
            .fetch_all(&mut *tx)
            .await;
        tx.rollback().await.unwrap();
        free += usize::from(locked.is_ok());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        free >= SAMPLES * 7 / 10,
        "rows were locked in {} of {SAMPLES} samples while Redis was down",
        SAMPLES - free
    );

    server.start_again().expect("restart redis-server");
    assert!(
        eventually(Duration::from_secs(60), || async {
            db.counts().await.pending == 0
        })
        .await,
        "rows left pending after Redis came back: {:?}",
        db.counts().await
    );
    relay.stop().await;
    // The server kept nothing (no persistence): the stream holds what was
    // sent after the restart, which must be every row of the outage.
    let in_stream = stream_ids(&server, "outbox_test.note");
    let seen = count(&in_stream);
    for id in &ids[1..] {
        assert_eq!(seen.get(id.to_string().as_str()), Some(&1), "{id}");
    }
}
