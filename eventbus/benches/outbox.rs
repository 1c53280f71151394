//! Outbox benchmarks against a private PostgreSQL (and redis-server with
//! feature `redis`), each next to a raw baseline measured in the same run:
//!
//! 1. Transactional publish cost: transactions/s of `BEGIN; INSERT business
//!    row; COMMIT` versus the same plus `bus.outbox().publish(...)`, on one
//!    connection and on 8, with PostgreSQL's durable defaults (fsync on) and
//!    with fsync off.
//! 2. Relay throughput for 100,000 rows: PostgreSQL -> memory (baseline: a
//!    raw claim/mark loop with the same SQL shape and no transport) and
//!    PostgreSQL -> Redis Streams (baseline: pipelined raw `XADD`s of the
//!    same payloads).
//!
//! ```text
//! cargo bench -p eventbus --features postgres --bench outbox
//! cargo bench -p eventbus --features postgres,redis --bench outbox
//! OUTBOX_BENCH_ROWS=20000 cargo bench ...   # a quicker run
//! OUTBOX_BENCH_ONLY=cost cargo bench ...    # only the publish cost
//! ```
//!
//! Prints a table; these are one-shot throughput runs against servers, so
//! they are timed directly rather than with criterion's sampling.

use std::time::{Duration, Instant};

use eventbus::outbox::{self, Relay, RelayOptions};
use eventbus::{Bus, Event};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

/// A typical job event: an id, a subject, a little data.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("send_short_message")]
struct SendShortMessage {
    #[event(subject)]
    id: i64,
    phone: String,
    template: String,
}

fn event(id: i64) -> SendShortMessage {
    SendShortMessage {
        id,
        phone: "+15550100".into(),
        template: "verification_code".into(),
    }
}

const BUSINESS: &str = "CREATE TABLE IF NOT EXISTS short_message (
    id BIGINT PRIMARY KEY, phone TEXT NOT NULL, text TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now())";

/// `OUTBOX_BENCH_ONLY=cost`: only the transactional publish cost.
fn only_cost() -> bool {
    std::env::var("OUTBOX_BENCH_ONLY").is_ok_and(|v| v == "cost")
}

fn rows() -> usize {
    std::env::var("OUTBOX_BENCH_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(100_000)
}

async fn pool(url: &str, n: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(n)
        .connect(url)
        .await
        .expect("connect")
}

async fn fresh_db(pg: &testkit::PostgresServer) -> PgPool {
    let url = pg.create_database().expect("database");
    let pool = pool(&url, 16).await;
    outbox::migrate(&pool).await.expect("migrate");
    sqlx::query(BUSINESS).execute(&pool).await.expect("table");
    pool
}

async fn memory_bus() -> Bus {
    Bus::builder()
        .service("bench")
        .without_registered()
        .connect("memory://")
        .await
        .expect("bus")
}

/// `clients` tasks, each running `per_client` transactions; `outbox` adds
/// the outbox row. Returns transactions per second.
async fn transactions(
    pool: &PgPool,
    bus: &Bus,
    clients: usize,
    per_client: usize,
    outbox: bool,
    base: i64,
) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (pool, bus) = (pool.clone(), bus.clone());
        tasks.push(tokio::spawn(async move {
            let outbox_handle = bus.outbox();
            for i in 0..per_client {
                let id = base + (c * per_client + i) as i64;
                let mut tx = pool.begin().await.expect("begin");
                sqlx::query("INSERT INTO short_message (id, phone, text) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind("+15550100")
                    .bind("Your code is 1234")
                    .execute(&mut *tx)
                    .await
                    .expect("insert");
                if outbox {
                    outbox_handle
                        .publish(&mut tx, event(id))
                        .await
                        .expect("outbox");
                }
                tx.commit().await.expect("commit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    (clients * per_client) as f64 / started.elapsed().as_secs_f64()
}

/// Business insert alone vs with the outbox row, alternating rounds; medians.
async fn publish_cost(pg: &testkit::PostgresServer, label: &str) {
    let pool = fresh_db(pg).await;
    let bus = memory_bus().await;
    for clients in [1usize, 8] {
        let per_client = if clients == 1 { 2_000 } else { 500 };
        let (mut alone, mut with) = (Vec::new(), Vec::new());
        let mut base = 1_000_000_000 * clients as i64;
        // Warm-up.
        transactions(&pool, &bus, clients, 100, true, base).await;
        base += 1_000_000;
        for _ in 0..5 {
            alone.push(transactions(&pool, &bus, clients, per_client, false, base).await);
            base += 1_000_000;
            with.push(transactions(&pool, &bus, clients, per_client, true, base).await);
            base += 1_000_000;
        }
        let (a, w) = (median(&mut alone), median(&mut with));
        println!(
            "publish cost  {label:<10} {clients} client(s): business only {a:>8.0} tx/s, business + outbox {w:>8.0} tx/s -> the outbox costs {:.2}x",
            a / w
        );
    }
    sqlx::query("TRUNCATE short_message, eventbus_outbox")
        .execute(&pool)
        .await
        .ok();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Fills the outbox with `n` committed rows (100 per transaction, 4 writers).
async fn fill(pool: &PgPool, bus: &Bus, n: usize) {
    let writers = 4;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (pool, bus) = (pool.clone(), bus.clone());
        tasks.push(tokio::spawn(async move {
            let outbox_handle = bus.outbox();
            let mine: Vec<usize> = (0..n).filter(|i| i % writers == w).collect();
            for chunk in mine.chunks(100) {
                let mut tx = pool.begin().await.expect("begin");
                for i in chunk {
                    outbox_handle
                        .publish(&mut tx, event(*i as i64))
                        .await
                        .expect("outbox");
                }
                tx.commit().await.expect("commit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    // As autovacuum would, before the relays run: fair plans for every contender.
    sqlx::query("VACUUM ANALYZE eventbus_outbox")
        .execute(pool)
        .await
        .expect("analyze");
}

async fn pending(pool: &PgPool) -> i64 {
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM eventbus_outbox WHERE status = 'pending'")
            .fetch_one(pool)
            .await
            .expect("count");
    n
}

/// Runs `relays` relays on `bus` until the outbox is drained; rows per second.
async fn relay_rate(pool: &PgPool, bus: &Bus, relays: usize, n: usize) -> f64 {
    let token = CancellationToken::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..relays {
        let relay = Relay::new(bus.clone(), RelayOptions::new(pool).retention(None));
        let t = token.clone();
        tasks.push(tokio::spawn(async move { relay.run(t).await }));
    }
    while pending(pool).await > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    token.cancel();
    for t in tasks {
        t.await.expect("relay task").expect("relay");
    }
    n as f64 / elapsed.as_secs_f64()
}

/// The relay's database work alone: the same claim and mark statements in a
/// loop, no encoding, no transport.
async fn raw_claim_loop(pool: &PgPool, n: usize) -> f64 {
    let started = Instant::now();
    loop {
        let mut tx = pool.begin().await.expect("begin");
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, payload::text FROM eventbus_outbox
             WHERE status = 'pending' AND available_at <= now()
             ORDER BY available_at, seq LIMIT 500 FOR UPDATE SKIP LOCKED",
        )
        .fetch_all(&mut *tx)
        .await
        .expect("claim");
        if rows.is_empty() {
            break;
        }
        let seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
        sqlx::query(
            "UPDATE eventbus_outbox SET status = 'published', published_at = clock_timestamp(), attempts = attempts + 1 WHERE seq = ANY($1)",
        )
        .bind(&seqs)
        .execute(&mut *tx)
        .await
        .expect("mark");
        tx.commit().await.expect("commit");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn relay_to_memory(pg: &testkit::PostgresServer, n: usize) {
    let pool = fresh_db(pg).await;
    let bus = memory_bus().await;

    fill(&pool, &bus, n).await;
    let raw = raw_claim_loop(&pool, n).await;
    sqlx::query("TRUNCATE eventbus_outbox")
        .execute(&pool)
        .await
        .unwrap();

    fill(&pool, &bus, n).await;
    let one = relay_rate(&pool, &bus, 1, n).await;
    sqlx::query("TRUNCATE eventbus_outbox")
        .execute(&pool)
        .await
        .unwrap();

    fill(&pool, &bus, n).await;
    let two = relay_rate(&pool, &bus, 2, n).await;
    println!(
        "relay -> memory   {n} rows: raw claim/mark loop {raw:>8.0} rows/s; relay {one:>8.0} rows/s ({:.2}x of raw); 2 relays {two:>8.0} rows/s",
        one / raw
    );
}

#[cfg(feature = "redis")]
async fn relay_to_redis(pg: &testkit::PostgresServer, n: usize) {
    use redis::AsyncCommands;

    let server = testkit::RedisServer::start().expect("redis-server");
    let pool = fresh_db(pg).await;
    let memory = memory_bus().await;

    // Baseline: the same payloads XADDed raw, pipelined 500 at a time.
    fill(&pool, &memory, n).await;
    let payloads: Vec<(String, String)> =
        sqlx::query_as("SELECT event_type, payload::text FROM eventbus_outbox ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let started = Instant::now();
    for chunk in payloads.chunks(500) {
        let mut pipe = redis::pipe();
        for (ty, payload) in chunk {
            pipe.cmd("XADD")
                .arg(format!("raw:stream:{ty}"))
                .arg("*")
                .arg("payload")
                .arg(payload)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    let raw = n as f64 / started.elapsed().as_secs_f64();
    let _: () = conn.del("raw:stream:send_short_message").await.unwrap();

    let bus = Bus::builder()
        .service("bench")
        .without_registered()
        .connect(&server.url())
        .await
        .expect("redis bus");
    let one = relay_rate(&pool, &bus, 1, n).await;
    sqlx::query("TRUNCATE eventbus_outbox")
        .execute(&pool)
        .await
        .unwrap();
    fill(&pool, &memory, n).await;
    let two = relay_rate(&pool, &bus, 2, n).await;
    println!(
        "relay -> redis    {n} rows: raw pipelined XADD {raw:>8.0} rows/s; relay {one:>8.0} rows/s ({:.2}x of raw); 2 relays {two:>8.0} rows/s",
        one / raw
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` asks for the list of benchmarks.
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let n = rows();
        println!(
            "outbox benchmarks ({} CPUs)",
            std::thread::available_parallelism().map_or(0, |p| p.get())
        );
        {
            let durable = testkit::PostgresServer::options()
                .durable(true)
                .start()
                .expect("PostgreSQL");
            publish_cost(&durable, "durable").await;
            if !only_cost() {
                relay_to_memory(&durable, n).await;
                #[cfg(feature = "redis")]
                relay_to_redis(&durable, n).await;
            }
        }
        let fast = testkit::PostgresServer::start().expect("PostgreSQL");
        publish_cost(&fast, "fsync=off").await;
    });
}
