//! Streams mode: delayed retries, delivery counts, reclaiming from dead
//! consumers, poison messages.

use std::time::{Duration, Instant};

use crate::common::*;
use eventbus_core::transport::{DeadLetterInfo, Topics};
use serde_json::json;

fn only(t: &str) -> Topics {
    Topics::Types(vec![t.to_owned()])
}

#[tokio::test]
async fn retry_later_bumps_the_delivery_count_without_blocking_others() {
    let server = server();
    let client = client(&server.url()).await;
    let consumer = client.consumer("g", only("t"), fast_opts()).await.unwrap();
    client
        .publish_one("t", &event("t", json!("first")))
        .await
        .unwrap();
    let first = read_n(&consumer, 1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(first.attempt, 1);
    let scheduled = Instant::now();
    consumer
        .retry_later(first.id, Duration::from_millis(1500))
        .await
        .unwrap();
    // Stays pending meanwhile, and is in the group's retry zset.
    assert_eq!(pending(&server, "{eventbus}:stream:t", "g"), 1);
    assert_eq!(server.cmd(&["ZCARD", "{eventbus}:retry:g"]).unwrap(), "1");

    // Other entries flow while the retry waits.
    client
        .publish_one("t", &event("t", json!("second")))
        .await
        .unwrap();
    let second = read_n(&consumer, 1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(data(&second), json!("second"));
    assert!(
        scheduled.elapsed() < Duration::from_millis(1500),
        "not stuck behind the retry"
    );
    consumer.ack(&[second.id]).await.unwrap();

    let again = read_n(&consumer, 1, Duration::from_secs(5)).await.remove(0);
    assert!(
        scheduled.elapsed() >= Duration::from_millis(1490),
        "not before its time"
    );
    assert_eq!(again.id, first.id);
    assert_eq!(again.payload, first.payload);
    assert_eq!(again.attempt, 2);
    consumer
        .retry_later(again.id, Duration::ZERO)
        .await
        .unwrap();
    let third = read_n(&consumer, 1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(third.attempt, 3);
    consumer.ack(&[third.id]).await.unwrap();
    assert_eq!(server.cmd(&["ZCARD", "{eventbus}:retry:g"]).unwrap(), "0");
    assert_eq!(pending(&server, "{eventbus}:stream:t", "g"), 0);
}

#[tokio::test]
async fn a_retry_survives_the_consumer_that_scheduled_it() {
    let server = server();
    let client = client(&server.url()).await;
    let a = client.consumer("g", only("t"), fast_opts()).await.unwrap();
    client
        .publish_one("t", &event("t", json!(1)))
        .await
        .unwrap();
    let e = read_n(&a, 1, Duration::from_secs(5)).await.remove(0);
    a.retry_later(e.id, Duration::from_millis(200))
        .await
        .unwrap();
    drop(a);
    let b = client.consumer("g", only("t"), fast_opts()).await.unwrap();
    let again = read_n(&b, 1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(again.payload, e.payload);
    assert_eq!(again.attempt, 2);
}

#[tokio::test]
async fn entries_of_a_dead_consumer_are_reclaimed() {
    let server = server();
    let client = client(&server.url()).await;
    let mut opts = fast_opts();
    opts.claim_idle = Duration::from_millis(300);
    opts.claim_interval = Duration::from_millis(100);
    let dead = client.consumer("g", only("t"), opts.clone()).await.unwrap();
    let survivor = client.consumer("g", only("t"), opts).await.unwrap();
    for i in 0..5 {
        client
            .publish_one("t", &event("t", json!(i)))
            .await
            .unwrap();
    }
    let taken = read_n(&dead, 5, Duration::from_secs(5)).await;
    // A retry scheduled far ahead is not "dead": it must not be reclaimed early.
    dead.retry_later(taken[4].id, Duration::from_secs(3600))
        .await
        .unwrap();
    drop(dead); // dies without acking

    let got = read_n(&survivor, 4, Duration::from_secs(10)).await;
    let mut seen: Vec<i64> = got.iter().map(|e| data(e).as_i64().unwrap()).collect();
    seen.sort();
    assert_eq!(seen, [0, 1, 2, 3]);
    assert!(got.iter().all(|e| e.attempt == 2), "{got:?}");
    assert_eq!(survivor.stats().reclaimed_or_released, 4);
    let ids: Vec<_> = got.iter().map(|e| e.id).collect();
    survivor.ack(&ids).await.unwrap();
    let later = read_for(&survivor, Duration::from_millis(800)).await;
    assert!(later.is_empty(), "the scheduled retry stays put: {later:?}");
    assert_eq!(server.cmd(&["ZCARD", "{eventbus}:retry:g"]).unwrap(), "1");
}

#[tokio::test]
async fn a_survivor_takes_over_only_as_many_entries_as_it_reads() {
    let server = server();
    let client = client(&server.url()).await;
    let mut opts = fast_opts();
    opts.claim_idle = Duration::from_millis(300);
    opts.claim_interval = Duration::from_millis(100);
    let dead = client.consumer("g", only("t"), opts.clone()).await.unwrap();
    for i in 0..5 {
        client
            .publish_one("t", &event("t", json!(i)))
            .await
            .unwrap();
    }
    read_n(&dead, 5, Duration::from_secs(5)).await;
    let dead_name = dead.name().to_owned();
    drop(dead); // dies without acking

    // Two survivors reading two at a time share the five: none takes more
    // than it hands out (an entry claimed and left in a buffer would look
    // dead again to the other one, and each takeover counts as a delivery).
    let a = client.consumer("g", only("t"), opts.clone()).await.unwrap();
    let b = client.consumer("g", only("t"), opts).await.unwrap();
    let first = read_n(&a, 2, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 2);
    assert_eq!(a.stats().reclaimed_or_released, 2, "took two, not five");
    let pending = server
        .cmd(&["XPENDING", "{eventbus}:stream:t", "g"])
        .unwrap();
    assert!(pending.contains(&format!("{}\n2", a.name())), "{pending}");
    assert!(pending.contains(&format!("{dead_name}\n3")), "{pending}");
    let mut rest = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rest.len() < 3 {
        assert!(Instant::now() < deadline, "the rest was not taken over");
        rest.extend(b.read(2).await.unwrap());
    }
    let mut all: Vec<i64> = first
        .iter()
        .chain(&rest)
        .map(|e| data(e).as_i64().unwrap())
        .collect();
    all.sort();
    assert_eq!(all, [0, 1, 2, 3, 4]);
    assert!(first.iter().chain(&rest).all(|e| e.attempt == 2));
}

#[tokio::test]
async fn released_entries_go_to_another_consumer_at_once() {
    let server = server();
    let client = client(&server.url()).await;
    let mut opts = fast_opts();
    opts.claim_idle = Duration::from_secs(600);
    opts.claim_interval = Duration::from_millis(100);
    let leaving = client.consumer("g", only("t"), opts.clone()).await.unwrap();
    let staying = client.consumer("g", only("t"), opts).await.unwrap();
    client
        .publish_one("t", &event("t", json!(1)))
        .await
        .unwrap();
    let e = read_n(&leaving, 1, Duration::from_secs(5)).await.remove(0);
    leaving.release(&[e.id]).await.unwrap();
    let got = read_n(&staying, 1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(got.payload, e.payload);
}

/// A message that "crashes" every consumer that reads it (never acked,
/// never retried) is still bounded: Redis's delivery count grows with each
/// takeover, and the consumer dead-letters it once the count exceeds
/// retries + 1, while other messages keep flowing.
#[tokio::test]
async fn poison_message_ends_in_the_dlq() {
    let server = server();
    let client = client(&server.url()).await;
    let retries = 2;
    let mut opts = fast_opts();
    opts.claim_idle = Duration::from_millis(100);
    opts.claim_interval = Duration::from_millis(50);
    client.consumer("g", only("t"), opts.clone()).await.unwrap(); // create the group
    client
        .publish_one("t", &event("t", json!("poison")))
        .await
        .unwrap();
    client
        .publish_one("t", &event("t", json!("fine")))
        .await
        .unwrap();

    let mut handled_fine = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut dead_lettered = None;
    while dead_lettered.is_none() || !handled_fine {
        assert!(Instant::now() < deadline, "poison never dead-lettered");
        // Each round is a fresh process: the previous one "crashed".
        let c = client.consumer("g", only("t"), opts.clone()).await.unwrap();
        for e in c.read(10).await.unwrap() {
            if data(&e) == json!("fine") {
                c.ack(&[e.id]).await.unwrap();
                handled_fine = true;
            } else if e.attempt > retries + 1 {
                let id = c
                    .dead_letter(
                        &e,
                        &DeadLetterInfo::new("tests::handler", e.attempt, "boom"),
                    )
                    .await
                    .unwrap();
                dead_lettered = Some(id);
            }
            // else: crash (drop without ack).
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let dl = client.dead_letters(10).await.unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].attempts, retries + 2);
    assert_eq!(pending(&server, "{eventbus}:stream:t", "g"), 0);
}

/// `close` hands back all a consumer owns — entries handed out and not
/// settled, and entries Redis delivered to a read of it whose reply never
/// arrived — so another consumer takes them over at its next claim pass,
/// long before `claim_idle`.
#[tokio::test]
async fn close_hands_back_everything_the_consumer_owns() {
    let server = server();
    let client = client(&server.url()).await;
    let mut opts = fast_opts();
    opts.claim_idle = Duration::from_secs(600);
    opts.claim_interval = Duration::from_millis(100);
    let mut leaving_opts = opts.clone();
    leaving_opts.name = Some("leaving".into());
    let leaving = client.consumer("g", only("t"), leaving_opts).await.unwrap();
    for n in 0..3 {
        client
            .publish_one("t", &event("t", json!(n)))
            .await
            .unwrap();
    }
    let handed = read_n(&leaving, 3, Duration::from_secs(5)).await;
    assert_eq!(handed.len(), 3);
    // Three more go to `leaving` by a read it never sees the reply of.
    for n in 3..6 {
        client
            .publish_one("t", &event("t", json!(n)))
            .await
            .unwrap();
    }
    let stolen = server
        .cmd(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "leaving",
            "COUNT",
            "10",
            "STREAMS",
            "{eventbus}:stream:t",
            ">",
        ])
        .unwrap();
    assert_eq!(stolen.matches("cloud_event").count(), 3, "{stolen}");

    let staying = client.consumer("g", only("t"), opts).await.unwrap();
    assert!(
        read_for(&staying, Duration::from_millis(700))
            .await
            .is_empty(),
        "nothing is taken over before claim_idle while `leaving` owns it"
    );
    assert_eq!(leaving.close().await.unwrap(), 6);
    let got = read_n(&staying, 6, Duration::from_secs(10)).await;
    let mut all: Vec<i64> = got.iter().map(|e| data(e).as_i64().unwrap()).collect();
    all.sort();
    assert_eq!(all, [0, 1, 2, 3, 4, 5]);
    staying
        .ack(&got.iter().map(|e| e.id).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(pending(&server, "{eventbus}:stream:t", "g"), 0);
}

/// A bare-data entry (a legacy producer's `XADD ... data {...}`) is wrapped
/// into a CloudEvent with the same id and time at every delivery, so a
/// handler that deduplicates by id recognises a redelivery.
#[tokio::test]
async fn a_bare_data_entry_keeps_its_cloudevent_id_across_redeliveries() {
    let server = server();
    let client = client(&server.url()).await;
    let consumer = client.consumer("g", only("t"), fast_opts()).await.unwrap();
    server
        .cmd(&["XADD", "{eventbus}:stream:t", "*", "data", r#"{"id":7}"#])
        .unwrap();
    let id_of = |d: &eventbus_core::transport::Delivery| {
        let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["time"].as_str().unwrap().to_owned(),
        )
    };
    let first = read_n(&consumer, 1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(data(&first), json!({"id": 7}));
    consumer
        .retry_later(first.id, Duration::ZERO)
        .await
        .unwrap();
    let again = read_n(&consumer, 1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(again.attempt, 2);
    assert_eq!(
        id_of(&again),
        id_of(&first),
        "same id and time on redelivery"
    );
    // Another group reading the same entry gives it the same id too.
    let other = client
        .consumer("h", only("t"), {
            let mut o = fast_opts();
            o.start = eventbus_redis::StartFrom::Earliest;
            o
        })
        .await
        .unwrap();
    let seen = read_n(&other, 1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(id_of(&seen), id_of(&first));
}
