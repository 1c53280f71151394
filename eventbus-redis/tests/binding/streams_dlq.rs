//! Streams mode: the dead-letter queue (list, replay to one group, delete,
//! purge) and bounded streams.

use std::time::{Duration, SystemTime};

use crate::common::*;
use eventbus_core::transport::{DeadLetterInfo, Topics};
use serde_json::json;

fn only(t: &str) -> Topics {
    Topics::Types(vec![t.to_owned()])
}

#[tokio::test]
async fn dead_letter_list_replay_to_one_group_purge() {
    let server = server();
    let client = client(&server.url()).await;
    let failing = client
        .consumer("svc.failing", only("t"), fast_opts())
        .await
        .unwrap();
    let other = client
        .consumer("svc.other", only("t"), fast_opts())
        .await
        .unwrap();
    let payload = event("t", json!({"id": 7}));
    client.publish_one("t", &payload).await.unwrap();

    let e = read_n(&failing, 1, Duration::from_secs(5)).await.remove(0);
    let o = read_n(&other, 1, Duration::from_secs(5)).await.remove(0);
    other.ack(&[o.id]).await.unwrap();

    let when = SystemTime::now();
    let mut info = DeadLetterInfo::new("svc::failing", 6, "database is down");
    info.event_id = Some("ev-7".into());
    let dlq_id = failing.dead_letter(&e, &info).await.unwrap();
    // Acked in the same step.
    assert_eq!(pending(&server, "{eventbus}:stream:t", "svc.failing"), 0);

    let listed = client.dead_letters(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    let dl = &listed[0];
    assert_eq!(dl.id, dlq_id);
    assert_eq!(dl.event_type.as_deref(), Some("t"), "the stream's type");
    assert_eq!(dl.event_id.as_deref(), Some("ev-7"));
    assert_eq!(dl.origin.as_deref(), Some("{eventbus}:stream:t"));
    assert_eq!(dl.group, "svc.failing");
    assert_eq!(dl.handler, "svc::failing");
    assert_eq!(dl.attempts, 6);
    assert_eq!(dl.error, "database is down");
    assert_eq!(&dl.payload[..], &payload[..]);
    let skew = dl
        .time
        .duration_since(when)
        .unwrap_or_else(|e| e.duration());
    assert!(
        skew < Duration::from_secs(1),
        "dead-lettered at {:?}",
        dl.time
    );
    assert_eq!(client.dead_letter_count().await.unwrap(), 1);
    assert!(
        client.replay("not-an-id").await.is_err(),
        "a malformed id is refused"
    );

    // Replay reaches the group that gave up, and only it.
    assert_eq!(
        client.replay(&dlq_id).await.unwrap().as_deref(),
        Some("svc.failing")
    );
    assert_eq!(client.dead_letter_count().await.unwrap(), 0);
    assert_eq!(
        client.replay(&dlq_id).await.unwrap(),
        None,
        "gone from the DLQ"
    );
    let replayed = read_n(&failing, 1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(&replayed.payload[..], &payload[..]);
    assert_eq!(&*replayed.event_type, "t");
    assert_eq!(replayed.attempt, 1);
    assert!(
        read_for(&other, Duration::from_millis(600))
            .await
            .is_empty()
    );
    failing.ack(&[replayed.id]).await.unwrap();
    // Acked replay entries are deleted, not kept forever.
    assert_eq!(
        server
            .cmd(&["XLEN", "{eventbus}:replay:svc.failing"])
            .unwrap(),
        "0"
    );

    // A replayed entry can fail again and be dead-lettered again.
    client
        .publish_one("t", &event("t", json!(8)))
        .await
        .unwrap();
    let again = read_n(&failing, 1, Duration::from_secs(5)).await.remove(0);
    let id2 = failing
        .dead_letter(&again, &DeadLetterInfo::new("h", 1, "e"))
        .await
        .unwrap();
    client.replay(&id2).await.unwrap();
    let r = read_n(&failing, 1, Duration::from_secs(5)).await.remove(0);
    let id3 = failing
        .dead_letter(&r, &DeadLetterInfo::new("h", 2, "again"))
        .await
        .unwrap();
    assert_eq!(
        server
            .cmd(&["XLEN", "{eventbus}:replay:svc.failing"])
            .unwrap(),
        "0"
    );
    assert_eq!(client.dead_letters(10).await.unwrap()[0].error, "again");

    assert!(client.delete_dead_letter(&id3).await.unwrap());
    assert!(!client.delete_dead_letter(&id3).await.unwrap());
    for i in 0..3 {
        client
            .publish_one("t", &event("t", json!(i)))
            .await
            .unwrap();
    }
    for e in read_n(&failing, 3, Duration::from_secs(5)).await {
        failing
            .dead_letter(&e, &DeadLetterInfo::new("h", 1, "x"))
            .await
            .unwrap();
    }
    assert_eq!(client.purge_dead_letters().await.unwrap(), 3);
    assert_eq!(client.dead_letter_count().await.unwrap(), 0);
}

#[tokio::test]
async fn replay_reaches_a_group_that_restarted() {
    let server = server();
    let client = client(&server.url()).await;
    let c = client.consumer("g", only("t"), fast_opts()).await.unwrap();
    client
        .publish_one("t", &event("t", json!(1)))
        .await
        .unwrap();
    let e = read_n(&c, 1, Duration::from_secs(5)).await.remove(0);
    let id = c
        .dead_letter(&e, &DeadLetterInfo::new("h", 1, "x"))
        .await
        .unwrap();
    drop(c);
    client.replay(&id).await.unwrap();
    let fresh = client.consumer("g", only("t"), fast_opts()).await.unwrap();
    let got = read_n(&fresh, 1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(got.payload, e.payload);
}

#[tokio::test]
async fn trimming_keeps_what_a_group_has_not_acked() {
    let server = server();
    let client = client(&with(&server.url(), "maxlen=10")).await;
    let fast = client
        .consumer("fast", only("t"), fast_opts())
        .await
        .unwrap();
    let slow = client
        .consumer("slow", only("t"), fast_opts())
        .await
        .unwrap();
    for i in 0..30 {
        client
            .publish_one("t", &event("t", json!(i)))
            .await
            .unwrap();
    }
    let got = read_n(&fast, 30, Duration::from_secs(5)).await;
    let ids: Vec<_> = got.iter().map(|e| e.id).collect();
    fast.ack(&ids).await.unwrap();

    // `slow` has read nothing: nothing may go.
    let r = client.trim().await.unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].len_before, 30);
    assert_eq!(r[0].trimmed, 0);
    assert_eq!(r[0].held_by.as_deref(), Some("slow"));

    // `slow` reads 20 and acks 15: entries up to its oldest unacked one may go.
    let s = read_n(&slow, 20, Duration::from_secs(5)).await;
    let ids: Vec<_> = s[..15].iter().map(|e| e.id).collect();
    slow.ack(&ids).await.unwrap();
    let r = client.trim().await.unwrap();
    assert_eq!(r[0].trimmed, 15);
    assert_eq!(r[0].held_by.as_deref(), Some("slow"));
    // The unacked ones are still there and can be handled.
    let rest = read_n(&slow, 10, Duration::from_secs(5)).await;
    let mut ids: Vec<_> = s[15..].iter().map(|e| e.id).collect();
    ids.extend(rest.iter().map(|e| e.id));
    slow.ack(&ids).await.unwrap();
    let r = client.trim().await.unwrap();
    assert_eq!(r[0].len_before, 15);
    assert_eq!(r[0].trimmed, 5);
    assert_eq!(r[0].held_by, None);
    assert_eq!(server.cmd(&["XLEN", "{eventbus}:stream:t"]).unwrap(), "10");
}
