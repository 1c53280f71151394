//! Dead letters of legacy (bare JSON) pub/sub messages through the bus: the
//! DLQ keeps the message as received and the channel it came on, a replay
//! publishes it again byte for byte. Regression: the DLQ held the
//! CloudEvent the bare message had been wrapped into, and a replay
//! republished that envelope, with an id eventbus made up, on a channel
//! whose other readers expect bare JSON; a non-JSON message's dead letter
//! must keep its channel too.

use std::time::Duration;

use crate::support::*;
use eventbus::{Bus, Event, HandlerDef};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What Django publishes on `legacy_review_flagged`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("legacy_review_flagged")]
struct ReviewFlagged {
    id: Uuid,
}

#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

async fn next_raw(raw: &mut redis::aio::PubSub) -> Vec<u8> {
    let msg = tokio::time::timeout(Duration::from_secs(10), raw.on_message().next())
        .await
        .expect("a message within 10 s")
        .expect("the subscription is open");
    msg.get_payload_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_dead_letter_keeps_the_message_and_replays_it_byte_for_byte() {
    let server = server();
    let channel = ReviewFlagged::TYPE;
    let bus = Bus::builder()
        .service("legacy_replay")
        .without_registered()
        .event::<ReviewFlagged>()
        .retry_policy(fast_retries())
        .handler(
            HandlerDef::new("on_flagged", |_: ReviewFlagged| async {
                Err::<(), _>(Refused)
            })
            .retries(0),
        )
        .connect(&with(&server.url(), "mode=pubsub"))
        .await
        .unwrap();
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    let raw = redis::Client::open(server.url()).unwrap();
    let mut raw = raw.get_async_pubsub().await.unwrap();
    raw.subscribe(channel).await.unwrap();

    // What other producers put on the channel: bare JSON the handler
    // refuses (spacing and a newline a re-encoding would not keep), bare
    // JSON that does not fit the type, and something that is not JSON.
    let refused = format!("{{ \"id\" : \"{}\" }}\n", Uuid::now_v7());
    for payload in [refused.as_str(), r#"{"id": 5}"#, "<html>oops</html>"] {
        server.cmd(&["PUBLISH", channel, payload]).unwrap();
        assert_eq!(next_raw(&mut raw).await, payload.as_bytes());
    }
    let bus_ref = &bus;
    wait_until_async("three dead letters", || async move {
        bus_ref.dead_letters(10).await.unwrap().len() == 3
    })
    .await;
    let dead = bus.dead_letters(10).await.unwrap();
    // The order of the three in the DLQ is not the publish order (the ones
    // that cannot be decoded do not wait for a handler run).
    let of = |payload: &str| {
        dead.iter()
            .find(|dl| dl.payload == payload.as_bytes())
            .unwrap_or_else(|| panic!("no dead letter holds {payload:?} as received: {dead:#?}"))
    };
    let (refused_dl, unfit, not_json) = (of(&refused), of(r#"{"id": 5}"#), of("<html>oops</html>"));
    for dl in [refused_dl, unfit, not_json] {
        assert_eq!(dl.origin.as_deref(), Some(channel), "{dl:?}");
        assert_eq!(dl.event_type.as_deref(), Some(channel), "{dl:?}");
        assert_eq!(dl.group, "legacy_replay.on_flagged");
    }
    // Bare JSON gets an id on receipt (what `ctx.id()` and the logs
    // showed); what is not JSON has none.
    assert!(refused_dl.event_id.is_some() && unfit.event_id.is_some());
    assert_eq!(not_json.event_id, None);
    assert_eq!(refused_dl.error, "refused");
    assert!(unfit.error.contains("data.id"), "{}", unfit.error);

    // The replay is the message as received, on its channel.
    assert!(bus.replay_dead_letter(&refused_dl.id).await.unwrap());
    assert_eq!(next_raw(&mut raw).await, refused.as_bytes());
    // ... which the handler refuses again.
    let refused = refused.as_bytes();
    wait_until_async("the replayed message dead-lettered again", || async move {
        let dead = bus_ref.dead_letters(10).await.unwrap();
        dead.len() == 3 && dead.iter().any(|dl| dl.payload == refused)
    })
    .await;
    running.shutdown().await.unwrap();
}
