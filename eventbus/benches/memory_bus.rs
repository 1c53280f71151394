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

fn event() -> ReviewCreated {
    ReviewCreated {
        id: uuid::Uuid::from_u128(0x0191_d3c4_0000_7000_8000_0000_0000_0001),
        rating: 5,
    }
}

async fn bus_with_counter(counter: Arc<Counter>, concurrency: u32) -> Bus {
    let handler = HandlerDef::new("count", move |e: ReviewCreated| {
        let counter = counter.clone();
        async move {
            std::hint::black_box(e);
            counter.hit();
        }
    })
    .concurrency(concurrency);
    Bus::builder()
        .service("bench")
        .without_registered()
        .handler_timeout(None)
        .handler(handler)
        .build()
        .await
        .unwrap()
}

async fn run_bus(bus: &Bus, counter: &Counter, n: usize) -> Duration {
    counter.arm(n);
    let start = Instant::now();
    let notified = counter.done.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    for _ in 0..n {
        bus.publish(event()).await.unwrap();
    }
    notified.await;
    start.elapsed()
}

async fn run_raw_typed(n: usize) -> Duration {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ReviewCreated>(1024);
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
        tx.send(event()).await.unwrap();
    }
    drop(tx);
    consumer.await.unwrap();
    start.elapsed()
}

async fn run_raw_json(n: usize) -> Duration {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
    let counter = Arc::new(Counter::default());
    counter.arm(n);
    let c = counter.clone();
    let consumer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            let e: ReviewCreated = serde_json::from_slice(&bytes).unwrap();
            std::hint::black_box(e);
            c.hit();
        }
    });
    let start = Instant::now();
    for _ in 0..n {
        tx.send(serde_json::to_vec(&event()).unwrap())
            .await
            .unwrap();
    }
    drop(tx);
    consumer.await.unwrap();
    start.elapsed()
}

const BATCH: usize = 10_000;

fn memory_bus(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let counter = Arc::new(Counter::default());
    let bus = rt.block_on(bus_with_counter(counter.clone(), 16));
    let _running = rt.block_on(async { bus.spawn() });

    // Allocations per event on the bus path, steady state.
    rt.block_on(run_bus(&bus, &counter, BATCH));
    let before = allocs();
    rt.block_on(run_bus(&bus, &counter, BATCH));
    let bus_allocs = (allocs() - before) as f64 / BATCH as f64;
    let before = allocs();
    rt.block_on(run_raw_json(BATCH));
    let raw_allocs = (allocs() - before) as f64 / BATCH as f64;
    println!("allocations per event: bus {bus_allocs:.2}, raw mpsc (json) {raw_allocs:.2}");

    // The ratio, from interleaved rounds (the order flipping every round,
    // as the machine may be shared): the median of the per-round ratios.
    let rounds = 9;
    let (mut vs_json, mut vs_typed) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut bus_t = Duration::ZERO;
        let mut json_t = Duration::ZERO;
        let mut typed_t = Duration::ZERO;
        let mut measure = |which: usize| {
            rt.block_on(async {
                for _ in 0..5 {
                    match which {
                        0 => bus_t += run_bus(&bus, &counter, BATCH).await,
                        1 => json_t += run_raw_json(BATCH).await,
                        _ => typed_t += run_raw_typed(BATCH).await,
                    }
                }
            })
        };
        let order: [usize; 3] = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
        for which in order {
            measure(which);
        }
        vs_json.push(json_t.as_secs_f64() / bus_t.as_secs_f64());
        vs_typed.push(typed_t.as_secs_f64() / bus_t.as_secs_f64());
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "throughput vs raw, median of {rounds} interleaved rounds of 5 x {BATCH} events: eventbus memory = {:.2}x raw mpsc + serde_json (target >= 0.8x), {:.2}x raw mpsc of the struct",
        median(vs_json),
        median(vs_typed)
    );

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
                        total += run_bus(&bus, &counter, BATCH).await;
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
                        total += run_raw_typed(BATCH).await;
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
                        total += run_raw_json(BATCH).await;
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
