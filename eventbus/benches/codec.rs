//! Codec cost: typed event -> structured CloudEvents JSON and back, against
//! `serde_json` of the same payload struct alone (the baseline), and against
//! the cloudevents-sdk's own `Event` deserialization for reference.
//!
//! `cargo bench -p eventbus --bench codec`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
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

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::count as allocs;

/// Allocations per call of `f`, over 1,000 calls.
fn allocs_per_call<T>(mut f: impl FnMut() -> T) -> f64 {
    let before = allocs();
    for _ in 0..1_000 {
        black_box(f());
    }
    (allocs() - before) as f64 / 1_000.0
}

fn sample() -> ModerateAction {
    ModerateAction {
        action_id: uuid::Uuid::now_v7(),
        status: 1,
        model_name: "Review".into(),
        id: uuid::Uuid::now_v7(),
    }
}

fn codec_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bus = rt
        .block_on(Bus::builder().service("bench").without_registered().build())
        .unwrap();
    let event = sample();
    let payload_json = serde_json::to_vec(&event).unwrap();
    let envelope = bus.encode(&event).unwrap().1.payload;

    println!(
        "allocations per call: encode {:.2} (payload only {:.2}), decode {:.2} (payload only {:.2})",
        allocs_per_call(|| bus.encode(&event).unwrap()),
        allocs_per_call(|| serde_json::to_vec(&event).unwrap()),
        allocs_per_call(|| codec::decode::<ModerateAction>(&envelope).unwrap()),
        allocs_per_call(|| serde_json::from_slice::<ModerateAction>(&payload_json).unwrap()),
    );

    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function(
        BenchmarkId::new("encode", "payload only (serde_json)"),
        |b| b.iter(|| serde_json::to_vec(black_box(&event)).unwrap()),
    );
    g.bench_function(BenchmarkId::new("encode", "cloudevent (eventbus)"), |b| {
        b.iter(|| bus.encode(black_box(&event)).unwrap())
    });
    g.bench_function(
        BenchmarkId::new("decode", "payload only (serde_json)"),
        |b| b.iter(|| serde_json::from_slice::<ModerateAction>(black_box(&payload_json)).unwrap()),
    );
    g.bench_function(BenchmarkId::new("decode", "cloudevent (eventbus)"), |b| {
        b.iter(|| codec::decode::<ModerateAction>(black_box(&envelope)).unwrap())
    });
    g.bench_function(
        BenchmarkId::new("decode", "cloudevent (cloudevents-sdk Event)"),
        |b| b.iter(|| serde_json::from_slice::<cloudevents::Event>(black_box(&envelope)).unwrap()),
    );
    g.bench_function(
        BenchmarkId::new("roundtrip", "payload only (serde_json)"),
        |b| {
            b.iter(|| {
                let bytes = serde_json::to_vec(black_box(&event)).unwrap();
                serde_json::from_slice::<ModerateAction>(&bytes).unwrap()
            })
        },
    );
    g.bench_function(
        BenchmarkId::new("roundtrip", "cloudevent (eventbus)"),
        |b| {
            b.iter(|| {
                let (_, out) = bus.encode(black_box(&event)).unwrap();
                codec::decode::<ModerateAction>(&out.payload).unwrap()
            })
        },
    );
    g.finish();
}

criterion_group!(benches, codec_benches);
criterion_main!(benches);
