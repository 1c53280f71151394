//! Throughput of the binding against a raw `redis` crate loop, in the same run.
//!
//! ```text
//! cargo run --release -p eventbus-redis --example throughput [-- N]
//! ```
//!
//! Starts its own `redis-server` on a free loopback port (never 6379), then
//! measures, on the same payload: pipelined XADD, XREADGROUP + pipelined XACK
//! per batch, concurrent single XADDs, and PUBLISH; raw loop and binding in
//! alternating rounds where possible (the machine is shared), and prints the
//! ratio binding/raw.

use std::time::{Duration, Instant};

use eventbus_core::transport::Topics;
use eventbus_redis::{Client, ConsumerOptions, RedisConfig};
use redis::AsyncCommands;
use testkit::RedisServer;

const BATCH: usize = 100;
const ROUNDS: usize = 10;

fn payload() -> Vec<u8> {
    br#"{"specversion":"1.0","id":"0190a6f2-7d1e-7c3a-9a5b-2f6c1d0e4b7a","source":"/reviews","type":"review_created","datacontenttype":"application/json","time":"2025-06-01T12:30:00.123456Z","data":{"id":"5b0c2d9e-1f3a-4c8b-9d7e-6a5f4e3d2c1b"}}"#.to_vec()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn report(what: &str, n: usize, raw: Duration, ours: Duration) {
    let (r, o) = (rate(n, raw), rate(n, ours));
    println!(
        "{what:<28} raw {r:>10.0}/s   eventbus-redis {o:>10.0}/s   ratio {:.2}x",
        o / r
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let server = RedisServer::start()?;
    let url = server.url();
    let p = payload();
    let raw_client = redis::Client::open(url.as_str())?;
    let mut raw = raw_client.get_multiplexed_async_connection().await?;

    let client = Client::connect(RedisConfig::from_url(&url)?).await?;
    let mut opts = ConsumerOptions::default();
    opts.start = eventbus_redis::StartFrom::Earliest;
    let consumer = client
        .consumer("bench", Topics::Types(vec!["review_created".into()]), opts)
        .await?;
    let batch: Vec<(&str, &[u8])> = (0..BATCH).map(|_| ("review_created", &p[..])).collect();

    // ---- publish: pipelined XADD, raw and binding in alternating rounds ----
    let (mut raw_pub, mut our_pub) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..n / BATCH / ROUNDS {
            let mut pipe = redis::pipe();
            for _ in 0..BATCH {
                pipe.cmd("XADD")
                    .arg("raw:stream")
                    .arg("*")
                    .arg("cloud_event")
                    .arg(&p)
                    .ignore();
            }
            pipe.query_async::<()>(&mut raw).await?;
        }
        raw_pub += t.elapsed();
        let t = Instant::now();
        for _ in 0..n / BATCH / ROUNDS {
            client.publish(&batch).await?;
        }
        our_pub += t.elapsed();
    }
    report("publish (batches of 100)", n, raw_pub, our_pub);

    // ---- consume: XREADGROUP + pipelined XACK -----------------------------
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("raw:stream")
        .arg("bench")
        .arg("0")
        .query_async(&mut raw)
        .await?;
    let t = Instant::now();
    let mut got = 0;
    while got < n {
        let reply: redis::streams::StreamReadReply = raw
            .xread_options(
                &["raw:stream"],
                &[">"],
                &redis::streams::StreamReadOptions::default()
                    .group("bench", "raw")
                    .count(BATCH)
                    .block(1000),
            )
            .await?;
        let ids: Vec<String> = reply
            .keys
            .iter()
            .flat_map(|k| k.ids.iter().map(|e| e.id.clone()))
            .collect();
        got += ids.len();
        if !ids.is_empty() {
            let _: () = raw.xack("raw:stream", "bench", &ids).await?;
        }
    }
    let raw_con = t.elapsed();
    let t = Instant::now();
    let mut got = 0;
    while got < n {
        let entries = consumer.read(BATCH).await?;
        got += entries.len();
        let ids: Vec<_> = entries.iter().map(|e| e.id).collect();
        consumer.ack(&ids).await?;
    }
    let our_con = t.elapsed();
    report("consume + ack (batches)", n, raw_con, our_con);

    // ---- concurrent single publishes (many in flight) ---------------------
    let conc = 64;
    let per = n / conc;
    let t = Instant::now();
    let tasks: Vec<_> = (0..conc)
        .map(|_| {
            let mut c = raw.clone();
            let p = p.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    let _: String = c.xadd("raw:single", "*", &[("cloud_event", &p)]).await?;
                }
                Ok::<_, redis::RedisError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let raw_single = t.elapsed();
    let t = Instant::now();
    let tasks: Vec<_> = (0..conc)
        .map(|_| {
            let c = client.clone();
            let p = p.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    c.publish_one("single", &p).await?;
                }
                Ok::<_, eventbus_redis::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let our_single = t.elapsed();
    report(
        "publish (64 tasks, 1 each)",
        per * conc,
        raw_single,
        our_single,
    );

    // ---- pub/sub PUBLISH --------------------------------------------------
    let pubsub = Client::connect(RedisConfig::from_url(&format!("{url}?mode=pubsub"))?).await?;
    let (mut raw_ps, mut our_ps) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..n / BATCH / ROUNDS {
            let mut pipe = redis::pipe();
            for _ in 0..BATCH {
                pipe.cmd("PUBLISH").arg("raw_channel").arg(&p).ignore();
            }
            pipe.query_async::<()>(&mut raw).await?;
        }
        raw_ps += t.elapsed();
        let t = Instant::now();
        for _ in 0..n / BATCH / ROUNDS {
            pubsub.publish(&batch).await?;
        }
        our_ps += t.elapsed();
    }
    report("pub/sub publish (batches)", n, raw_ps, our_ps);
    Ok(())
}
