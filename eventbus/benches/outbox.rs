//! Outbox benchmarks (work in progress).
fn main() {}
