//! `cargo run --example reviews` gives the same report on the memory
//! transport, on Redis Streams (`EVENTBUS_URL=redis://...`) and on Redis
//! pub/sub with the legacy codec (`?mode=pubsub&codec=legacy`), each on a
//! throwaway `redis-server` started by testkit.
//!
//! The example's scenario ([`reviews::run`], which its `main` prints) runs in
//! this process, once on each transport, and the reports are compared. On
//! pub/sub too the summary is the memory one, count for count: pub/sub is
//! at-most-once (and one instance of a group at a time handles its events,
//! through the group's lease), but the scenario publishes only once its subscriptions are
//! live (`Running::ready`), so a healthy local Redis delivers every event
//! once; in-process retries and the dead letter work as on the others.
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
    // Routed: the Celery tasks to the Celery queues, the rest to Streams.
    assert_eq!(redis.transport, "routed", "{redis:?}");
    // The example really went through Redis.
    let types = server.cmd(&["SMEMBERS", "{eventbus}:types"]).unwrap();
    assert!(types.lines().any(|t| t == "review_created"), "{types}");
    assert_eq!(
        server.cmd(&["XLEN", "{eventbus}:celery:dlq"]).unwrap(),
        "1",
        "the failing email job (a Celery task) is in the Celery DLQ"
    );
    assert_eq!(server.cmd(&["EXISTS", "sms_send_queue"]).unwrap(), "0");
    assert!(
        server
            .cmd(&["SMEMBERS", "_kombu.binding.sms_send_queue"])
            .unwrap()
            .contains("sms_send_queue"),
        "the SMS worker declared its Celery queue"
    );

    assert!(memory.summary.len() > 20, "{memory:?}");
    assert_eq!(
        redis.summary, memory.summary,
        "the summaries differ\n--- memory:\n{memory:#?}\n--- redis:\n{redis:#?}"
    );
    // The dead-letter section agrees too.
    assert_eq!(redis.dead_letters, memory.dead_letters);

    // Regression: on pub/sub the events published right after `spawn()`
    // were lost ("the scenario did not complete within 30 s").
    let server = RedisServer::start().expect("start redis-server");
    let pubsub = reviews::run(Some(&format!("{}?mode=pubsub&codec=legacy", server.url())))
        .await
        .expect("the scenario on Redis pub/sub with the legacy codec");
    assert_eq!(pubsub.transport, "routed", "{pubsub:?}");
    assert_eq!(
        pubsub.summary, memory.summary,
        "the summaries differ\n--- memory:\n{memory:#?}\n--- pub/sub:\n{pubsub:#?}"
    );
    assert_eq!(pubsub.dead_letters, memory.dead_letters);
    // It really went through pub/sub: no streams; the dead letter holds the
    // job as its handler got it, from a Celery task message.
    assert_eq!(server.cmd(&["EXISTS", "{eventbus}:types"]).unwrap(), "0");
    let dlq = server
        .cmd(&["XRANGE", "{eventbus}:celery:dlq", "-", "+"])
        .unwrap();
    let lines: Vec<&str> = dlq.lines().collect();
    let payload = lines
        .iter()
        .position(|l| *l == "payload")
        .map(|i| lines[i + 1])
        .expect("a payload field");
    let job: serde_json::Value = serde_json::from_str(payload).unwrap();
    assert_eq!(job["type"], "send_email_task", "{payload}");
    assert_eq!(job["source"], "/celery/celery", "{payload}");
    assert_eq!(job["data"], 0, "{payload}");
}
