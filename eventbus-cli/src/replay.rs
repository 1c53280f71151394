//! `eventbus replay --group G --since T`: the events a Redis Streams group
//! read since a time, delivered to that group again (and only to it),
//! through its replay stream (`{P}:replay:<group>`, which its consumers read
//! beside their event streams, as for a replayed dead letter). The events
//! keep their ids; a handler that dedupes by id sees them as duplicates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use eventbus::transport::redis::redis;
use serde_json::json;

/// Options of `replay`.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The transport's URL (`redis://host:6379/0`); as the library reads `EVENTBUS_URL`.
    #[arg(long, env = "EVENTBUS_URL", value_parser = crate::non_empty)]
    pub(crate) transport_url: String,
    /// The consumer group to deliver to again.
    #[arg(long)]
    group: String,
    /// From then on: RFC 3339 or an age (`2h`).
    #[arg(long, value_parser = crate::dlq::parse_time)]
    since: SystemTime,
    /// Until then (default: now).
    #[arg(long, value_parser = crate::dlq::parse_time)]
    until: Option<SystemTime>,
    /// Only this type (of those the group reads).
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Count what would be replayed, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// An `XRANGE` entry: its id and fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// Runs `eventbus replay`.
pub(crate) async fn run(args: &ReplayArgs) -> Result<(), String> {
    let groups = crate::groups::snapshot(&args.transport_url).await?;
    let Some(group) = groups.get(&args.group) else {
        let mut known: Vec<&str> = groups.keys().map(String::as_str).collect();
        known.truncate(20);
        return Err(format!(
            "no consumer group `{}` on this server (groups: {})",
            args.group,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ));
    };
    let client = eventbus::transport::redis::Client::connect_url(&args.transport_url)
        .await
        .map_err(|e| e.to_string())?;
    let (from, to) = (
        ms(args.since),
        ms(args.until.unwrap_or_else(SystemTime::now)),
    );
    let replay_key = client.keys().replay(&args.group);
    let (mut replayed, mut other_format) = (0u64, 0u64);
    for ty in &group.types {
        if args.event_type.as_ref().is_some_and(|t| t != ty) {
            continue;
        }
        let stream = client.keys().stream(ty);
        let mut start = format!("{from}-0");
        loop {
            let entries: Vec<StreamEntry> = client
                .query(
                    "XRANGE",
                    redis::cmd("XRANGE")
                        .arg(&stream)
                        .arg(&start)
                        .arg(format!("{to}-18446744073709551615"))
                        .arg("COUNT")
                        .arg(500),
                )
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = entries.last() else { break };
            start = format!("({}", last.0);
            let mut pipe = redis::pipe();
            for (id, fields) in &entries {
                let Some((_, ce)) = fields.iter().find(|(k, _)| k == "cloud_event") else {
                    // Bare data (a legacy layout): its consumers decode it by the stream.
                    other_format += 1;
                    continue;
                };
                replayed += 1;
                if !args.dry_run {
                    pipe.cmd("XADD")
                        .arg(&replay_key)
                        .arg("*")
                        .arg("type")
                        .arg(ty)
                        .arg("cloud_event")
                        .arg(ce)
                        .arg("replayed_from")
                        .arg(id)
                        .ignore();
                }
            }
            if !args.dry_run {
                client
                    .query_pipe::<()>("XADD", &pipe)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if entries.len() < 500 {
                break;
            }
        }
    }
    if args.json {
        println!(
            "{}",
            json!({"group": args.group, "replayed": replayed, "skipped_other_format": other_format, "dry_run": args.dry_run})
        );
    } else {
        let verb = if args.dry_run {
            "would be delivered"
        } else {
            "delivered"
        };
        println!("{replayed} events {verb} again to {}", args.group);
        if other_format > 0 {
            println!("{other_format} entries in the bare-data layout were left out");
        }
    }
    Ok(())
}
