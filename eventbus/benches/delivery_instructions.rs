//! Instruction counts of one delivery, each against the raw loop doing the
//! same work for the user (decoding the same payload into the same typed
//! struct), for a noise-free figure on a shared machine. Run under
//! `valgrind --tool=callgrind` with an operation and a count, subtract the
//! count-0 run (setup, warm-up, teardown), divide by the count:
//!
//! - `bus`: `bus.publish` → typed handler → ack on `memory://`, one publish
//!   at a time on a current-thread runtime (one handler, concurrency 16),
//!   until the handler has seen every event; `raw-mpsc`: the same events
//!   JSON-encoded with serde_json, sent through a `tokio::sync::mpsc` channel
//!   (capacity 1,024, as in the `memory_bus` bench) to a task that decodes
//!   them into the struct. Both warm up with [`WARM_UP`] events first, in
//!   the count-0 run too.
//! - `redis-decode` (with the `redis` feature): what the Redis Streams
//!   consumer and the worker do with one entry of an `XREADGROUP` reply until
//!   the handler has its typed struct: the RESP bytes parsed
//!   (`redis::parse_redis_value`), the reply turned into `Delivery`s by the
//!   consumer's own code (`eventbus_redis::__bench`), the typed decode and
//!   `Envelope` of the worker's handler call, and the ack's bookkeeping;
//!   `raw-redis-decode`: `redis::parse_redis_value` of the same bytes and
//!   `serde_json::from_slice` of the payload into `{ data: T }` (the
//!   attributes skipped), a raw consumer's work. One entry per reply; the
//!   `-batch` variants read replies of [`BATCH`] entries (the count is in
//!   entries, a multiple of [`BATCH`]).
//!
//! ```text
//! cargo bench -p eventbus --features redis --bench delivery_instructions --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/deps/delivery_instructions-* bus 20000
//! ```
//! `scripts/instructions.sh` does all of it and prints the table.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use eventbus::{Bus, Event, HandlerDef};
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use tokio::sync::Notify;

/// The small typed event every operation delivers.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_created")]
struct ReviewCreated {
    id: uuid::Uuid,
    rating: u8,
}

/// Events delivered before the measured ones, in every run.
const WARM_UP: usize = 1_000;

/// Entries per `XREADGROUP` reply of the `-batch` operations.
#[cfg(feature = "redis")]
const BATCH: usize = 100;

fn event() -> ReviewCreated {
    ReviewCreated {
        id: uuid::Uuid::from_u128(0x0191_d3c4_0000_7000_8000_0000_0000_0001),
        rating: 5,
    }
}

/// The handler's (or raw consumer's) work: count, and wake the publisher
/// after the last one.
#[derive(Default)]
struct Counter {
    seen: AtomicUsize,
    target: AtomicUsize,
    done: Notify,
}

impl Counter {
    fn hit(&self) {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.target.load(Ordering::Relaxed) {
            self.done.notify_one();
        }
    }

    /// Publishes `n` events with `send` and waits until all were handled.
    async fn round<F: Future<Output = ()>>(&self, n: usize, mut send: impl FnMut() -> F) {
        if n == 0 {
            return;
        }
        self.seen.store(0, Ordering::Relaxed);
        self.target.store(n, Ordering::Relaxed);
        let notified = self.done.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        for _ in 0..n {
            send().await;
        }
        notified.await;
    }
}

/// `bus`: the memory bus, warm-up then `n` events.
async fn bus(n: usize) {
    let counter = Arc::new(Counter::default());
    let c = counter.clone();
    let handler = HandlerDef::new("count", move |e: ReviewCreated| {
        let c = c.clone();
        async move {
            black_box(e);
            c.hit();
        }
    })
    .concurrency(16);
    let bus = Bus::builder()
        .service("bench")
        .without_registered()
        .handler_timeout(None)
        .handler(handler)
        .build()
        .await
        .unwrap();
    let running = bus.spawn();
    let bus = &bus;
    let publish = move || async move { bus.publish(event()).await.unwrap() };
    counter.round(WARM_UP, publish).await;
    counter.round(n, publish).await;
    running.shutdown().await.unwrap();
}

/// `raw-mpsc`: serde_json through a channel to a decoding task, warm-up
/// then `n` events.
async fn raw_mpsc(n: usize) {
    let counter = Arc::new(Counter::default());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
    let c = counter.clone();
    let consumer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            let e: ReviewCreated = serde_json::from_slice(&bytes).unwrap();
            black_box(e);
            c.hit();
        }
    });
    let sender = &tx;
    let send = move || async move {
        sender
            .send(serde_json::to_vec(&event()).unwrap())
            .await
            .unwrap()
    };
    counter.round(WARM_UP, send).await;
    counter.round(n, send).await;
    drop(tx);
    consumer.await.unwrap();
}

/// The Redis Streams operations.
#[cfg(feature = "redis")]
mod streams {
    use super::*;
    use bytes::Bytes;
    use eventbus::{Envelope, HandlerArg};
    use eventbus_core::arg::Incoming;
    use eventbus_redis::__bench::StreamReader;
    use eventbus_redis::redis::{self, Value};
    use std::io::Write;

    /// The per-type stream of `review_created` with the default prefix.
    const STREAM: &str = "{eventbus}:stream:review_created";

    /// `value` as a RESP bulk string.
    fn bulk(out: &mut Vec<u8>, value: &[u8]) {
        write!(out, "${}\r\n", value.len()).unwrap();
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }

    /// The RESP2 bytes of an `XREADGROUP` reply of `entries` entries of
    /// [`STREAM`], each a `cloud_event` field holding `payload`.
    pub(super) fn reply(payload: &[u8], entries: usize) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"*1\r\n*2\r\n");
        bulk(&mut out, STREAM.as_bytes());
        write!(out, "*{entries}\r\n").unwrap();
        for seq in 0..entries {
            out.extend_from_slice(b"*2\r\n");
            bulk(&mut out, format!("1733050000000-{seq}").as_bytes());
            out.extend_from_slice(b"*2\r\n");
            bulk(&mut out, b"cloud_event");
            bulk(&mut out, payload);
        }
        out
    }

    /// `redis-decode`: `replies` replies of `bytes` through the consumer's
    /// decoding and the worker's typed decode.
    pub(super) fn decode(bytes: &[u8], replies: usize) {
        let mut reader = StreamReader::new([(STREAM, ReviewCreated::TYPE)]);
        let mut ids = Vec::new();
        for _ in 0..replies {
            let value = redis::parse_redis_value(black_box(bytes)).unwrap();
            let deliveries = reader.deliveries_of_reply(value);
            ids.clear();
            for d in &deliveries {
                let incoming = Incoming {
                    payload: &d.payload,
                    upcasts: &[],
                };
                let (attrs, e) = <ReviewCreated as HandlerArg>::decode(&incoming).unwrap();
                let envelope = Envelope::new(Bytes::clone(&d.payload), &attrs);
                black_box((envelope, e));
                ids.push(d.id);
            }
            reader.acked(&ids);
            drop(black_box(deliveries));
        }
    }

    /// The payload a raw consumer decodes: `data`, the attributes skipped.
    #[derive(Deserialize)]
    struct Data<T> {
        data: T,
    }

    /// The `cloud_event` fields of an `XREADGROUP` reply.
    fn payloads(reply: &Value, mut f: impl FnMut(&[u8])) {
        let Value::Array(streams) = reply else {
            panic!("not an XREADGROUP reply")
        };
        for stream in streams {
            let Value::Array(pair) = stream else { continue };
            let Some(Value::Array(entries)) = pair.get(1) else {
                continue;
            };
            for entry in entries {
                let Value::Array(entry) = entry else { continue };
                let Some(Value::Array(fields)) = entry.get(1) else {
                    continue;
                };
                for kv in fields.chunks_exact(2) {
                    if let [Value::BulkString(k), Value::BulkString(v)] = kv
                        && k == b"cloud_event"
                    {
                        f(v);
                    }
                }
            }
        }
    }

    /// `raw-redis-decode`: `replies` replies of `bytes` parsed, each payload
    /// decoded with serde_json.
    pub(super) fn raw_decode(bytes: &[u8], replies: usize) {
        for _ in 0..replies {
            let value = redis::parse_redis_value(black_box(bytes)).unwrap();
            payloads(&value, |payload| {
                let d: Data<ReviewCreated> = serde_json::from_slice(payload).unwrap();
                black_box(d.data);
            });
            drop(black_box(value));
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let op = args.next().unwrap_or_else(|| "bus".into());
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match op.as_str() {
        "bus" => rt.block_on(bus(n)),
        "raw-mpsc" => rt.block_on(raw_mpsc(n)),
        #[cfg(feature = "redis")]
        "redis-decode" | "raw-redis-decode" | "redis-decode-batch" | "raw-redis-decode-batch" => {
            let payload = rt.block_on(async {
                let bus = Bus::builder()
                    .service("bench")
                    .without_registered()
                    .build()
                    .await
                    .unwrap();
                bus.encode(&event()).unwrap().1.payload
            });
            let per_reply = if op.ends_with("-batch") { BATCH } else { 1 };
            assert!(
                n.is_multiple_of(per_reply),
                "the count must be a multiple of {per_reply}"
            );
            let bytes = streams::reply(&payload, per_reply);
            if op.starts_with("raw-") {
                streams::raw_decode(&bytes, n / per_reply);
            } else {
                streams::decode(&bytes, n / per_reply);
            }
        }
        other => panic!("unknown operation {other}"),
    }
}
