//! `eventbus tail`: the events of a transport's log as they are published
//! (Redis Streams, `memory://` of the same process), read by cursor through
//! the transport's pull feed.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use eventbus::feed::Cursor;
use eventbus::transport::Topics;
use serde_json::Value;

/// Options of `tail`.
#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// The transport's URL (`redis://host:6379/0`); as the library reads `EVENTBUS_URL`.
    #[arg(long, env = "EVENTBUS_URL", value_parser = crate::non_empty)]
    pub(crate) transport_url: String,
    /// Only these CloudEvents types (repeat the option for more).
    #[arg(long = "type")]
    types: Vec<String>,
    /// Only the types this consumer group reads (Redis Streams).
    #[arg(long)]
    group: Option<String>,
    /// Where to start: `now` (only what is published from now on), `start`
    /// (the oldest event the transport keeps), a cursor printed by `--json`,
    /// or a time (RFC 3339, or an age such as `10m`): the events whose
    /// `time` is at or after it, read from the start of the log.
    #[arg(long, default_value = "now")]
    from: String,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<usize>,
    /// One JSON object a line: `{"cursor": ..., "event": <the CloudEvent>}`.
    #[arg(long)]
    json: bool,
}

/// Control characters escaped.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn line(event: &Value, colour: bool) -> String {
    let s = |k: &str| event.get(k).and_then(Value::as_str).unwrap_or("-");
    let mut data = event.get("data").map(|d| d.to_string()).unwrap_or_default();
    if data.chars().count() > 120 {
        data = data.chars().take(119).collect::<String>() + "…";
    }
    let ty = printable(s("type"));
    let ty = if colour {
        format!("\x1b[36m{ty}\x1b[0m")
    } else {
        ty
    };
    format!(
        "{}  {ty}  {}  {}  {}",
        printable(s("time")),
        printable(s("id")),
        printable(s("subject")),
        printable(&data)
    )
}

/// The types consumer group `group` reads (Redis Streams).
#[cfg(feature = "redis")]
async fn group_types(url: &str, group: &str) -> Result<Vec<String>, String> {
    let groups = crate::groups::snapshot(url).await?;
    match groups.get(group) {
        Some(g) => Ok(g.types.iter().cloned().collect()),
        None => Err(format!(
            "no consumer group `{group}` on this server; `eventbus groups` lists them"
        )),
    }
}

#[cfg(not(feature = "redis"))]
async fn group_types(_url: &str, _group: &str) -> Result<Vec<String>, String> {
    Err("--group reads Redis Streams' groups: build eventbus-cli with the `redis` feature".into())
}

/// Runs `eventbus tail` until `--count` events or SIGINT/SIGTERM.
pub(crate) async fn run(args: &TailArgs) -> Result<(), String> {
    let transport = eventbus::transport::connect(&args.transport_url)
        .await
        .map_err(|e| e.to_string())?;
    let Some(feed) = transport.feed() else {
        return Err(format!(
            "the {} transport keeps no log to tail (pub/sub delivers and forgets); tail a Streams URL",
            transport.name()
        ));
    };
    let mut types = args.types.clone();
    if let Some(group) = &args.group {
        types.extend(group_types(&args.transport_url, group).await?);
    }
    let topics = if types.is_empty() {
        Topics::All
    } else {
        Topics::Types(types)
    };
    let fail = |e: eventbus::feed::FeedError| format!("reading the feed failed: {e}");
    let since = match args.from.as_str() {
        "start" | "now" => None,
        other => crate::dlq::parse_time(other).ok(),
    };
    let mut after: Option<Cursor> = match args.from.as_str() {
        _ if since.is_some() => None,
        "start" => None,
        "now" => {
            // The end of the log: read it through (a page a round trip).
            let mut at = None;
            loop {
                let page = feed.read(at.as_ref(), &topics, 1000).await.map_err(fail)?;
                let done = page.entries.len() < 1000;
                at = page.next.or(at);
                if done {
                    break at;
                }
            }
        }
        cursor => Some(Cursor::new(cursor)),
    };
    let colour = !args.json && std::io::stdout().is_terminal();
    let mut printed = 0usize;
    loop {
        let page = feed
            .read(after.as_ref(), &topics, 500)
            .await
            .map_err(fail)?;
        if page.entries.is_empty() {
            feed.wait(after.as_ref(), &topics, Duration::from_secs(5))
                .await
                .map_err(fail)?;
            continue;
        }
        for entry in &page.entries {
            let event: Value = serde_json::from_slice(&entry.payload).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&entry.payload).into_owned())
            });
            if let Some(since) = since {
                let time = event
                    .get("time")
                    .and_then(Value::as_str)
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| std::time::SystemTime::from(t.with_timezone(&chrono::Utc)));
                if time.is_none_or(|t| t < since) {
                    continue;
                }
            }
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"cursor": entry.cursor.as_str(), "event": event})
                );
            } else {
                println!("{}", line(&event, colour));
            }
            printed += 1;
            if args.count.is_some_and(|n| printed >= n) {
                return Ok(());
            }
        }
        after = page.next.or(after);
    }
}
