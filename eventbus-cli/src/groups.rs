//! `eventbus groups`: the consumer groups of a Redis Streams transport, read
//! from the server (`XINFO GROUPS`, `XPENDING`, `XINFO CONSUMERS`, the
//! groups' liveness zsets and the dead-letter queue): per group its lag,
//! what is in flight and redelivered, its consumers, the age of its oldest
//! unsettled event and its dead letters.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::{Value, json};

/// Options of `groups`.
#[derive(Debug, Args)]
pub(crate) struct GroupsArgs {
    /// The transport's URL (`redis://host:6379/0`); as the library reads `EVENTBUS_URL`.
    #[arg(long, env = "EVENTBUS_URL", value_parser = crate::non_empty)]
    pub(crate) transport_url: String,
    /// Only groups reading this type.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Only this group.
    #[arg(long)]
    group: Option<String>,
    /// Exit with code 3 when a group's lag (events not yet delivered) is above this.
    #[arg(long)]
    max_lag: Option<u64>,
    /// Exit with code 3 when a group's oldest unsettled event is older than this (`30s`, `5m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    max_age: Option<Duration>,
    /// Print again every 2 s until SIGINT.
    #[arg(long)]
    watch: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// One group as the server tells it.
#[derive(Debug, Default)]
pub(crate) struct Group {
    pub(crate) types: BTreeSet<String>,
    pub(crate) lag: u64,
    pub(crate) in_flight: u64,
    pub(crate) redelivered: u64,
    oldest_ms: Option<u64>,
    /// Consumer name -> alive.
    pub(crate) consumers: BTreeMap<String, bool>,
    pub(crate) dead_letters: u64,
}

impl Group {
    /// How long its oldest unsettled event has waited.
    pub(crate) fn oldest(&self) -> Option<Duration> {
        age(self.oldest_ms)
    }
}

/// Every group on the Streams transport at `url`.
pub(crate) async fn snapshot(url: &str) -> Result<BTreeMap<String, Group>, String> {
    read(url, None, None).await
}

/// An `XRANGE` entry: its id and fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The ms part of a stream id.
fn id_ms(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

/// A Redis map reply (`XINFO ...`): field name to value.
fn fields(v: &redis::Value) -> BTreeMap<String, redis::Value> {
    let mut out = BTreeMap::new();
    match v {
        redis::Value::Array(items) => {
            for pair in items.chunks(2) {
                if let [k, v] = pair
                    && let Ok(k) = redis::from_redis_value_ref::<String>(k)
                {
                    out.insert(k, v.clone());
                }
            }
        }
        redis::Value::Map(items) => {
            for (k, v) in items {
                if let Ok(k) = redis::from_redis_value_ref::<String>(k) {
                    out.insert(k, v.clone());
                }
            }
        }
        _ => {}
    }
    out
}

fn num(m: &BTreeMap<String, redis::Value>, k: &str) -> Option<u64> {
    m.get(k)
        .and_then(|v| redis::from_redis_value_ref::<u64>(v).ok())
}

fn text(m: &BTreeMap<String, redis::Value>, k: &str) -> Option<String> {
    m.get(k)
        .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
}

use eventbus::transport::redis::redis;

async fn read(
    url: &str,
    event_type: Option<&str>,
    group: Option<&str>,
) -> Result<BTreeMap<String, Group>, String> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    if !matches!(
        scheme,
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster"
    ) {
        return Err(format!(
            "`eventbus groups` reads the consumer groups of Redis Streams; `{scheme}://` keeps them in one process"
        ));
    }
    let client = eventbus::transport::redis::Client::connect_url(url)
        .await
        .map_err(|e| e.to_string())?;
    if client.config().mode() == eventbus::transport::redis::Mode::PubSub {
        return Err(
            "pub/sub keeps no consumer groups on the server (`?mode=pubsub`); read a Streams URL"
                .into(),
        );
    }
    let q = |cmd: &redis::Cmd| {
        let client = client.clone();
        let cmd = cmd.clone();
        async move { client.query::<redis::Value>("XINFO", &cmd).await }
    };
    let types: Vec<String> = client
        .query(
            "SMEMBERS",
            redis::cmd("SMEMBERS").arg(client.keys().types()),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let now = now_ms();
    for ty in types {
        if event_type.is_some_and(|t| t != ty) {
            continue;
        }
        let stream = client.keys().stream(&ty);
        let Ok(infos) = q(redis::cmd("XINFO").arg("GROUPS").arg(&stream)).await else {
            continue;
        };
        let redis::Value::Array(infos) = infos else {
            continue;
        };
        for info in &infos {
            let info = fields(info);
            let Some(name) = text(&info, "name") else {
                continue;
            };
            if group.is_some_and(|g| g != name) {
                continue;
            }
            let g = groups.entry(name.clone()).or_default();
            g.types.insert(ty.clone());
            let lag = num(&info, "lag").unwrap_or(0);
            g.lag += lag;
            g.in_flight += num(&info, "pending").unwrap_or(0);
            // The oldest unsettled: the first pending entry, else the first undelivered.
            let pending: Vec<(String, String, u64, u64)> = client
                .query(
                    "XPENDING",
                    redis::cmd("XPENDING")
                        .arg(&stream)
                        .arg(&name)
                        .arg("-")
                        .arg("+")
                        .arg(1000),
                )
                .await
                .unwrap_or_default();
            g.redelivered += pending.iter().filter(|p| p.3 > 1).count() as u64;
            let mut oldest = pending.first().and_then(|p| id_ms(&p.0));
            if oldest.is_none() && lag > 0 {
                let last = text(&info, "last-delivered-id").unwrap_or_else(|| "0-0".into());
                let next: Vec<StreamEntry> = client
                    .query(
                        "XRANGE",
                        redis::cmd("XRANGE")
                            .arg(&stream)
                            .arg(format!("({last}"))
                            .arg("+")
                            .arg("COUNT")
                            .arg(1),
                    )
                    .await
                    .unwrap_or_default();
                oldest = next.first().and_then(|e| id_ms(&e.0));
            }
            if let Some(ms) = oldest {
                g.oldest_ms = Some(g.oldest_ms.map_or(ms, |o| o.min(ms)));
            }
            if let Ok(redis::Value::Array(consumers)) =
                q(redis::cmd("XINFO").arg("CONSUMERS").arg(&stream).arg(&name)).await
            {
                for c in &consumers {
                    if let Some(cname) = text(&fields(c), "name") {
                        g.consumers.entry(cname).or_insert(false);
                    }
                }
            }
        }
    }
    for (name, g) in &mut groups {
        let alive: Vec<(String, u64)> = client
            .query(
                "ZRANGE",
                redis::cmd("ZRANGE")
                    .arg(client.keys().alive(name))
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
            )
            .await
            .unwrap_or_default();
        for (consumer, deadline) in alive {
            g.consumers.insert(consumer, deadline > now);
        }
    }
    let dead = client
        .dead_letters(100_000)
        .await
        .map_err(|e| e.to_string())?;
    for d in dead {
        if let Some(g) = groups.get_mut(&d.group) {
            g.dead_letters += 1;
        }
    }
    Ok(groups)
}

fn age(ms: Option<u64>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(now_ms().saturating_sub(ms)))
}

/// Prints the groups once; `Ok(true)` when a `--max-*` was exceeded.
async fn once(args: &GroupsArgs) -> Result<bool, String> {
    let groups = read(
        &args.transport_url,
        args.event_type.as_deref(),
        args.group.as_deref(),
    )
    .await?;
    let mut problem = false;
    let mut rows = Vec::new();
    for (name, g) in &groups {
        let oldest = age(g.oldest_ms);
        let over = args.max_lag.is_some_and(|m| g.lag > m)
            || matches!((args.max_age, oldest), (Some(m), Some(a)) if a > m);
        problem |= over;
        rows.push((name, g, oldest, over));
    }
    if args.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|(name, g, oldest, over)| {
                json!({
                    "group": name,
                    "types": g.types,
                    "lag": g.lag,
                    "in_flight": g.in_flight,
                    "redelivered": g.redelivered,
                    "oldest_pending_ms": oldest.map(|d| d.as_millis() as u64),
                    "consumers": g.consumers.iter().map(|(c, alive)| json!({"name": c, "alive": alive})).collect::<Vec<_>>(),
                    "dead_letters": g.dead_letters,
                    "over_limit": over,
                })
            })
            .collect();
        println!("{}", json!({ "groups": list }));
    } else {
        println!(
            "{:<40} {:>8} {:>9} {:>11} {:>10} {:>9} {:>6}",
            "group", "lag", "in flight", "redelivered", "oldest", "consumers", "dlq"
        );
        for (name, g, oldest, over) in &rows {
            let alive = g.consumers.values().filter(|a| **a).count();
            println!(
                "{:<40} {:>8} {:>9} {:>11} {:>10} {:>9} {:>6}{}",
                name,
                g.lag,
                g.in_flight,
                g.redelivered,
                oldest.map_or("-".to_owned(), |d| humantime::format_duration(
                    Duration::from_secs(d.as_secs())
                )
                .to_string()),
                format!("{alive}/{}", g.consumers.len()),
                g.dead_letters,
                if *over { "  over the limit" } else { "" }
            );
        }
        if rows.is_empty() {
            println!("no consumer groups");
        }
    }
    Ok(problem)
}

/// Runs `eventbus groups`.
pub(crate) async fn run(args: &GroupsArgs) -> Result<bool, String> {
    if !args.watch {
        return once(args).await;
    }
    let stop = crate::stop_signal();
    tokio::pin!(stop);
    loop {
        if !args.json {
            print!("\x1b[2J\x1b[H");
        }
        once(args).await?;
        tokio::select! {
            _ = &mut stop => return Ok(false),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
