//! Memory bus throughput: publish -> typed handler -> ack on one handler,
//! against raw `tokio::sync::mpsc` loops doing the same work in the same run:
//! - `raw mpsc (typed)`: the struct itself goes through the channel;
//! - `raw mpsc (json)`: the payload is JSON-encoded, sent, decoded (the same
//!   serialization work a bus that can cross a process boundary does).
//!
//! Also counts heap allocations per event on the bus path with a counting
//! global allocator and prints them.
//!
//! `cargo bench -p eventbus --bench memory_bus`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use eventbus::{Bus, Event, HandlerDef};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::count as allocs;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_created")]
struct ReviewCreated {
    id: uuid::Uuid,
    rating: u8,
}

/// The payload of realistic shape of `examples/loadgen.rs` (349 bytes of
/// JSON: strings, floats, a list of two objects).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("order_placed")]
struct Order {
    id: uuid::Uuid,
    seq: u64,
    sent_ns: u64,
    customer: String,
    status: String,
    currency: String,
    total: f64,
    items: Vec<LineItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
struct LineItem {
    sku: String,
    name: String,
    quantity: u32,
    unit_price: f64,
}

/// An event of the bench: how to make one.
trait Payload: Event + Clone {
    const NAME: &'static str;
    fn make() -> Self;
}

impl Payload for ReviewCreated {
    const NAME: &'static str = "review_created (2 fields, 58 B)";
    fn make() -> Self {
        ReviewCreated {
            id: uuid::Uuid::from_u128(0x0191_d3c4_0000_7000_8000_0000_0000_0001),
            rating: 5,
        }
    }
}

impl Payload for Order {
    const NAME: &'static str = "order (349 B)";
    fn make() -> Self {
        Order {
            id: uuid::Uuid::from_u128(0x0191_d3c4_0000_7000_8000_0000_0000_0001),
            seq: 7,
            sent_ns: 1_733_050_000_000_000_000,
            customer: "cus_9e3779b9".to_owned(),
            status: "paid".to_owned(),
            currency: "EUR".to_owned(),
            total: 129.97,
            items: vec![
                LineItem {
                    sku: "SKU-1042-BLK-42".to_owned(),
                    name: "Trail running shoe, black".to_owned(),
                    quantity: 1,
                    unit_price: 99.99,
                },
                LineItem {
                    sku: "SKU-2210-WHT-M".to_owned(),
                    name: "Merino socks (2 pairs)".to_owned(),
                    quantity: 2,
                    unit_price: 14.99,
                },
            ],
        }
    }
}

/// The handler's work: count, and wake the publisher after the last one.
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
    fn arm(&self, n: usize) {
        self.seen.store(0, Ordering::Relaxed);
        self.target.store(n, Ordering::Relaxed);
    }
}

fn counting<P: Payload>(name: &'static str, counter: Arc<Counter>, concurrency: u32) -> HandlerDef {
    HandlerDef::new(name, move |e: P| {
        let counter = counter.clone();
        async move {
            std::hint::black_box(e);
            counter.hit();
        }
    })
    .concurrency(concurrency)
}

/// A bus with a counting handler for each payload.
async fn bus_with_counters(small: Arc<Counter>, order: Arc<Counter>, concurrency: u32) -> Bus {
    Bus::builder()
        .service("bench")
        .without_registered()
        .handler_timeout(None)
        .handler(counting::<ReviewCreated>("count", small, concurrency))
        .handler(counting::<Order>("count_orders", order, concurrency))
        .build()
        .await
        .unwrap()
}

async fn run_bus<P: Payload>(bus: &Bus, counter: &Counter, n: usize) -> Duration {
    counter.arm(n);
    let start = Instant::now();
    let notified = counter.done.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    for _ in 0..n {
        bus.publish(P::make()).await.unwrap();
    }
    notified.await;
    start.elapsed()
}

async fn run_raw_typed<P: Payload>(n: usize) -> Duration {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<P>(1024);
    let counter = Arc::new(Counter::default());
    counter.arm(n);
    let c = counter.clone();
    let consumer = tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            std::hint::black_box(e);
            c.hit();
        }
    });
    let start = Instant::now();
    for _ in 0..n {
        tx.send(P::make()).await.unwrap();
    }
    drop(tx);
    consumer.await.unwrap();
    start.elapsed()
}

async fn run_raw_json<P: Payload>(n: usize) -> Duration {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
    let counter = Arc::new(Counter::default());
    counter.arm(n);
    let c = counter.clone();
    let consumer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            let e: P = serde_json::from_slice(&bytes).unwrap();
            std::hint::black_box(e);
            c.hit();
        }
    });
    let start = Instant::now();
    for _ in 0..n {
        tx.send(serde_json::to_vec(&P::make()).unwrap())
            .await
            .unwrap();
    }
    drop(tx);
    consumer.await.unwrap();
    start.elapsed()
}

/// Allocations per event of the bus and of the raw JSON loop, and the
/// throughput ratios from interleaved rounds (the order flipping every
/// round, as the machine may be shared): the medians of the per-round ratios.
fn report<P: Payload>(rt: &tokio::runtime::Runtime, bus: &Bus, counter: &Counter) {
    // Steady state: the first run warms up.
    rt.block_on(run_bus::<P>(bus, counter, BATCH));
    let before = allocs();
    rt.block_on(run_bus::<P>(bus, counter, BATCH));
    let bus_allocs = (allocs() - before) as f64 / BATCH as f64;
    let before = allocs();
    rt.block_on(run_raw_json::<P>(BATCH));
    let raw_allocs = (allocs() - before) as f64 / BATCH as f64;
    let payload = serde_json::to_vec(&P::make()).unwrap();
    // What serde_json allocates to decode the struct (its strings, lists).
    let before = allocs();
    std::hint::black_box(serde_json::from_slice::<P>(&payload).unwrap());
    let decode_allocs = allocs() - before;

    let rounds = 9;
    let (mut vs_json, mut vs_typed) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (mut bus_t, mut json_t, mut typed_t) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let order: [usize; 3] = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
        for which in order {
            rt.block_on(async {
                for _ in 0..5 {
                    match which {
                        0 => bus_t += run_bus::<P>(bus, counter, BATCH).await,
                        1 => json_t += run_raw_json::<P>(BATCH).await,
                        _ => typed_t += run_raw_typed::<P>(BATCH).await,
                    }
                }
            })
        }
        vs_json.push(json_t.as_secs_f64() / bus_t.as_secs_f64());
        vs_typed.push(typed_t.as_secs_f64() / bus_t.as_secs_f64());
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{}: allocations per event: bus {bus_allocs:.2}, raw mpsc + serde_json {raw_allocs:.2} (of which the struct's decode {decode_allocs}); throughput, median of {rounds} interleaved rounds of 5 x {BATCH} events: eventbus memory = {:.2}x raw mpsc + serde_json (target >= 0.8x), {:.2}x raw mpsc of the struct",
        P::NAME,
        median(vs_json),
        median(vs_typed)
    );
}

const BATCH: usize = 10_000;

fn memory_bus(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let counter = Arc::new(Counter::default());
    let orders = Arc::new(Counter::default());
    let bus = rt.block_on(bus_with_counters(counter.clone(), orders.clone(), 16));
    let _running = rt.block_on(async { bus.spawn() });
    report::<ReviewCreated>(&rt, &bus, &counter);
    report::<Order>(&rt, &bus, &orders);

    let mut g = c.benchmark_group("memory_bus");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    g.bench_function(
        BenchmarkId::new("publish->handle->ack", "eventbus memory"),
        |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += run_bus::<ReviewCreated>(&bus, &counter, BATCH).await;
                    }
                    total
                })
            })
        },
    );
    g.bench_function(
        BenchmarkId::new("publish->handle->ack", "raw mpsc (typed)"),
        |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += run_raw_typed::<ReviewCreated>(BATCH).await;
                    }
                    total
                })
            })
        },
    );
    g.bench_function(
        BenchmarkId::new("publish->handle->ack", "raw mpsc (json)"),
        |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += run_raw_json::<ReviewCreated>(BATCH).await;
                    }
                    total
                })
            })
        },
    );
    g.finish();
}

criterion_group!(benches, memory_bus);
criterion_main!(benches);
