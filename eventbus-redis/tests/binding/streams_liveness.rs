//! Streams mode: who takes over whose entries. A consumer that shows it is
//! alive keeps its entries past `claim_idle`; one whose heartbeat stopped
//! (its runtime died with it) is taken over after `heartbeat_timeout`, long
//! before `claim_idle`; one that never showed a heartbeat (an older version)
//! is taken over after `claim_idle`, as before.

use std::time::{Duration, Instant};

use crate::common::*;
use eventbus_core::transport::Topics;
use eventbus_redis::ConsumerOptions;
use serde_json::json;
use testkit::{RedisServer, wait_until};

fn only(t: &str) -> Topics {
    Topics::Types(vec![t.to_owned()])
}

const STREAM: &str = "{eventbus}:stream:t";
const ALIVE: &str = "{eventbus}:alive:g";

/// The server's clock in ms.
fn server_ms(server: &RedisServer) -> u64 {
    let time = server.cmd(&["TIME"]).unwrap();
    let mut parts = time.lines().map(|p| p.parse::<u64>().unwrap());
    let (secs, micros) = (parts.next().unwrap(), parts.next().unwrap());
    secs * 1000 + micros / 1000
}

/// `consumer`'s liveness deadline (server ms), if it is in the group's zset.
fn deadline(server: &RedisServer, consumer: &str) -> Option<u64> {
    server
        .cmd(&["ZSCORE", ALIVE, consumer])
        .ok()
        .and_then(|s| s.parse().ok())
}

async fn publish_n(client: &eventbus_redis::Client, n: i64) {
    for i in 0..n {
        client
            .publish_one("t", &event("t", json!(i)))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_consumer_keeps_its_entries_past_claim_idle() {
    let server = server();
    let client = client(&server.url()).await;
    let mut opts = fast_opts();
    // Without liveness, an entry pending for 200 ms would be taken over.
    opts.claim_idle = Duration::from_millis(200);
    opts.claim_interval = Duration::from_millis(50);
    let holder = client.consumer("g", only("t"), opts.clone()).await.unwrap();
    let other = client.consumer("g", only("t"), opts).await.unwrap();
    publish_n(&client, 3).await;
    let held = read_n(&holder, 3, Duration::from_secs(5)).await;
    let alive_until = deadline(&server, holder.name()).expect("the holder shows it is alive");
    assert!(alive_until > server_ms(&server), "{alive_until}");

    // The holder's handlers are "slow": it reads nothing more, acks nothing,
    // and its heartbeat goes on. Ten times `claim_idle`, and longer than
    // the heartbeat timeout (5 s by default).
    let got = read_for(&other, Duration::from_secs(6)).await;
    assert!(got.is_empty(), "taken from a live consumer: {got:?}");
    assert_eq!(other.stats().reclaimed_or_released, 0);
    assert!(
        deadline(&server, holder.name()).unwrap() > alive_until,
        "the heartbeat moved the deadline on"
    );
    holder
        .ack(&held.iter().map(|e| e.id).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(pending(&server, STREAM, "g"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_consumer_is_taken_over_at_once() {
    let server = server();
    let client = client(&server.url()).await;
    let mut opts = fast_opts();
    opts.claim_idle = Duration::from_secs(600); // no fallback here
    let dropped = client.consumer("g", only("t"), opts.clone()).await.unwrap();
    let survivor = client.consumer("g", only("t"), opts).await.unwrap();
    publish_n(&client, 3).await;
    read_n(&dropped, 3, Duration::from_secs(5)).await;
    let name = dropped.name().to_owned();
    drop(dropped); // it can hand nothing out again: marked dead
    let got = read_n(&survivor, 3, Duration::from_secs(10)).await;
    assert!(got.iter().all(|e| e.attempt == 2), "{got:?}");
    assert_eq!(survivor.stats().reclaimed_or_released, 3);
    wait_until("the dead consumer, owning nothing, left the zset", || {
        deadline(&server, &name).is_none()
    })
    .await;
}

/// A consumer whose process died: its runtime stops (the heartbeat task with
/// it) and no destructor runs, as with SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_heartbeat_stopped_is_taken_over_after_the_heartbeat_timeout() {
    let server = server();
    let url = server.url();
    let mut opts = fast_opts();
    opts.heartbeat_interval = Duration::from_millis(100);
    opts.heartbeat_timeout = Duration::from_millis(1000);
    opts.claim_idle = Duration::from_secs(600); // the fallback would take 10 minutes
    opts.claim_interval = Duration::from_millis(100);
    let client = client(&url).await;
    let survivor = client.consumer("g", only("t"), opts.clone()).await.unwrap();
    publish_n(&client, 4).await;

    let (dead_name, died) = {
        let (url, opts) = (url.clone(), opts.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let name = rt.block_on(async {
                let c = eventbus_redis::Client::connect_url(&url).await.unwrap();
                let doomed = c.consumer("g", only("t"), opts).await.unwrap();
                read_n(&doomed, 4, Duration::from_secs(5)).await;
                let name = doomed.name().to_owned();
                std::mem::forget(doomed); // no destructor: nothing marks it dead
                std::mem::forget(c);
                name
            });
            rt.shutdown_background(); // the heartbeat task dies here
            (name, Instant::now())
        })
        .join()
        .unwrap()
    };
    assert!(deadline(&server, &dead_name).is_some());
    let got = read_n(&survivor, 4, Duration::from_secs(15)).await;
    let took = died.elapsed();
    println!("takeover after the heartbeat stopped (timeout 1 s, interval 100 ms): {took:?}");
    assert!(got.iter().all(|e| e.attempt == 2), "{got:?}");
    assert!(
        took < Duration::from_secs(60),
        "taken over by liveness, not after claim_idle: {took:?}"
    );
    let mut seen: Vec<i64> = got.iter().map(|e| data(e).as_i64().unwrap()).collect();
    seen.sort();
    assert_eq!(seen, [0, 1, 2, 3]);
    survivor
        .ack(&got.iter().map(|e| e.id).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(pending(&server, STREAM, "g"), 0);
}

/// Entries of a consumer that never showed a heartbeat (a process of an
/// older version) are taken over after `claim_idle`, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_without_heartbeat_is_taken_over_after_claim_idle() {
    let server = server();
    let client = client(&server.url()).await;
    let mut opts: ConsumerOptions = fast_opts();
    opts.claim_idle = Duration::from_millis(1500);
    opts.claim_interval = Duration::from_millis(50);
    let survivor = client.consumer("g", only("t"), opts).await.unwrap();
    publish_n(&client, 2).await;
    // Taken before the read: Redis's idle time of the entries is never more
    // than this clock's time since (taken after, it could be, by the round trip).
    let read_at = Instant::now();
    let read = server
        .cmd(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "old-version",
            "COUNT",
            "10",
            "STREAMS",
            STREAM,
            ">",
        ])
        .unwrap();
    assert_eq!(read.matches("cloud_event").count(), 2, "{read}");
    assert!(deadline(&server, "old-version").is_none());

    let early = read_for(&survivor, Duration::from_millis(500)).await;
    if read_at.elapsed() < Duration::from_millis(1500) {
        assert!(early.is_empty(), "taken before claim_idle: {early:?}");
    }
    let mut got = early;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 2 {
        assert!(Instant::now() < deadline, "never taken over");
        got.extend(survivor.read(2).await.unwrap());
    }
    assert!(read_at.elapsed() >= Duration::from_millis(1500));
    assert!(got.iter().all(|e| e.attempt == 2), "{got:?}");
}
