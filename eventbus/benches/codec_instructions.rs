//! Instruction counts of the codec, for a noise-free ratio on a shared
//! machine: run under `valgrind --tool=callgrind` with an operation and a
//! count, subtract the count-0 run, divide.
//!
//! ```text
//! cargo bench -p eventbus --bench codec_instructions --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/deps/codec_instructions-* encode 100000
//! ```
//! `scripts/instructions.sh` does all of it and prints the table (with the
//! delivery counts of `delivery_instructions`).

use eventbus::{Bus, Event, codec};
use serde::{Deserialize, Serialize};
use std::hint::black_box;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("moderate_action")]
struct ModerateAction {
    action_id: uuid::Uuid,
    status: u8,
    model_name: String,
    #[event(subject)]
    id: uuid::Uuid,
}

/// A larger, typical payload (~1 KB): a review with its text.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_created")]
struct ReviewCreated {
    id: uuid::Uuid,
    author_id: uuid::Uuid,
    rating: u8,
    title: String,
    text: String,
    tags: Vec<String>,
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let op = args.next().unwrap_or_else(|| "encode".into());
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bus = rt
        .block_on(Bus::builder().service("bench").without_registered().build())
        .unwrap();
    let event = ModerateAction {
        action_id: uuid::Uuid::now_v7(),
        status: 1,
        model_name: "Review".into(),
        id: uuid::Uuid::now_v7(),
    };
    let payload = serde_json::to_vec(&event).unwrap();
    let envelope = bus.encode(&event).unwrap().1.payload;
    let review = ReviewCreated {
        id: uuid::Uuid::now_v7(),
        author_id: uuid::Uuid::now_v7(),
        rating: 4,
        title: "Friendly staff, slow service".into(),
        text: "The place was busy on a Friday night and we waited a while for a table. ".repeat(12),
        tags: vec!["dinner".into(), "family".into(), "downtown".into()],
    };
    let review_payload = serde_json::to_vec(&review).unwrap();
    let review_envelope = bus.encode(&review).unwrap().1.payload;
    if op == "bus" {
        // publish -> typed handler -> ack on the memory bus, n events.
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = count.clone();
        let handler = eventbus::HandlerDef::new("count", move |e: ModerateAction| {
            let c = c.clone();
            async move {
                black_box(e);
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        rt.block_on(async {
            let bus = Bus::builder()
                .service("bench")
                .without_registered()
                .handler_timeout(None)
                .handler(handler)
                .build()
                .await
                .unwrap();
            let running = bus.spawn();
            for _ in 0..n {
                bus.publish(event.clone()).await.unwrap();
            }
            while count.load(std::sync::atomic::Ordering::Relaxed) < n {
                tokio::task::yield_now().await;
            }
            running.shutdown().await.unwrap();
        });
        return;
    }
    for _ in 0..n {
        match op.as_str() {
            "payload-encode" => drop(black_box(serde_json::to_vec(black_box(&event)).unwrap())),
            "payload-decode" => drop(black_box(
                serde_json::from_slice::<ModerateAction>(black_box(&payload)).unwrap(),
            )),
            "encode" => drop(black_box(bus.encode(black_box(&event)).unwrap())),
            "decode" => drop(black_box(
                codec::decode::<ModerateAction>(black_box(&envelope)).unwrap(),
            )),
            "sdk-decode" => drop(black_box(
                serde_json::from_slice::<cloudevents::Event>(black_box(&envelope)).unwrap(),
            )),
            "large-payload-encode" => {
                drop(black_box(serde_json::to_vec(black_box(&review)).unwrap()))
            }
            "large-payload-decode" => drop(black_box(
                serde_json::from_slice::<ReviewCreated>(black_box(&review_payload)).unwrap(),
            )),
            "large-encode" => drop(black_box(bus.encode(black_box(&review)).unwrap())),
            "large-decode" => drop(black_box(
                codec::decode::<ReviewCreated>(black_box(&review_envelope)).unwrap(),
            )),
            other => panic!("unknown operation {other}"),
        }
    }
}
