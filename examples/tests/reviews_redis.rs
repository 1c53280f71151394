//! `cargo run --example reviews` gives the same report on the memory
//! transport and on Redis (`EVENTBUS_URL=redis://...`, a throwaway
//! `redis-server` started by testkit).
//!
//! The example's scenario ([`reviews::run`], which its `main` prints) runs in
//! this process, once on each transport, and the two reports are compared.
#![cfg(feature = "redis")]

// The whole example, so that this binary registers exactly its events,
// handlers and schedules (its `main` goes unused).
#[path = "../reviews.rs"]
#[allow(dead_code)]
mod reviews;

use testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reviews_example_gives_the_same_summary_on_memory_and_on_redis() {
    let memory = reviews::run(Some("memory://"))
        .await
        .expect("the scenario on memory://");
    assert_eq!(memory.transport, "memory", "{memory:?}");

    let server = RedisServer::start().expect("start redis-server");
    let redis = reviews::run(Some(&server.url()))
        .await
        .expect("the scenario on Redis");
    assert_eq!(redis.transport, "redis-streams", "{redis:?}");
    // The example really went through Redis.
    let types = server.cmd(&["SMEMBERS", "{eventbus}:types"]).unwrap();
    assert!(types.lines().any(|t| t == "review_created"), "{types}");
    assert_eq!(
        server.cmd(&["XLEN", "{eventbus}:dlq"]).unwrap(),
        "1",
        "the failing email job is in the Redis DLQ"
    );

    assert!(memory.summary.len() > 20, "{memory:?}");
    assert_eq!(
        redis.summary, memory.summary,
        "the summaries differ\n--- memory:\n{memory:#?}\n--- redis:\n{redis:#?}"
    );
    // The dead-letter section agrees too.
    assert_eq!(redis.dead_letters, memory.dead_letters);
}
