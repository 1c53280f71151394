//! `eventbus dlq list|show|replay|purge|stats`: the dead-letter queue of a
//! transport, read and changed directly (no service needs to run).
//!
//! On a Redis URL the listing covers both dead-letter queues on the server:
//! the transport's (`{eventbus}:dlq`, shown by id) and the Celery task
//! queues' (`{eventbus}:celery:dlq`, ids prefixed `celery:`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use eventbus::transport::{DeadLetter, Transport};
use serde_json::{Value, json};

/// How many dead letters a listing reads at most from each queue.
const READ_AT_MOST: usize = 100_000;

/// `eventbus dlq ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead letters, oldest first.
    #[command(
        after_help = "Output: one line a dead letter (id, time, group, type, attempts, error), \
        a last line `N of M dead letters` (M: all in the queue); with --json one object \
        {\"dead_letters\": [...], \"matched\": N, \"total\": M}.\n\
        Exit codes: 0 ok, 1 error, 2 usage, 3 more than --max dead letters matched."
    )]
    List(ListArgs),
    /// Show one dead letter: its attributes, error and payload.
    Show(ShowArgs),
    /// Deliver dead letters again, each to the one group that gave up on it
    /// (the event keeps its id), and remove them from the queue.
    #[command(
        after_help = "Give ids, or --all with the filters. --dry-run lists what would be \
        replayed; --rate N replays at most N a second. Exit code 1 when an id is not in the queue."
    )]
    Replay(ChangeArgs),
    /// Remove dead letters without delivering them (asks first unless --yes).
    #[command(
        after_help = "Give ids, or --all with the filters. Without --yes it asks on the \
        terminal, and refuses when stdin is not one."
    )]
    Purge(ChangeArgs),
    /// Count dead letters by type, group and error class.
    Stats(ListArgs),
}

impl DlqCommand {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            DlqCommand::List(_) => "dlq list",
            DlqCommand::Show(_) => "dlq show",
            DlqCommand::Replay(_) => "dlq replay",
            DlqCommand::Purge(_) => "dlq purge",
            DlqCommand::Stats(_) => "dlq stats",
        }
    }

    pub(crate) fn url(&self) -> &str {
        match self {
            DlqCommand::List(a) | DlqCommand::Stats(a) => &a.transport.transport_url,
            DlqCommand::Show(a) => &a.transport.transport_url,
            DlqCommand::Replay(a) | DlqCommand::Purge(a) => &a.list.transport.transport_url,
        }
    }
}

/// The transport to read.
#[derive(Debug, Args)]
pub(crate) struct TransportArg {
    /// The transport's URL (`redis://host:6379/0`); as the library reads `EVENTBUS_URL`.
    #[arg(long, env = "EVENTBUS_URL", value_parser = crate::non_empty)]
    transport_url: String,
}

/// Filters, output and limits of `list` and `stats`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    transport: TransportArg,
    /// Only this CloudEvents type.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Only this consumer group.
    #[arg(long)]
    group: Option<String>,
    /// Only dead letters from then on: RFC 3339 (`2026-12-01T10:00:00Z`) or an age (`2h`, `30m`).
    #[arg(long, value_parser = parse_time)]
    since: Option<SystemTime>,
    /// Only dead letters until then (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    until: Option<SystemTime>,
    /// Only those whose error contains this text.
    #[arg(long)]
    error_contains: Option<String>,
    /// Show at most this many (the count of all that match is still given).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Exit with code 3 when more than this many match (for scripts and alerts).
    #[arg(long)]
    max: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `show`.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    transport: TransportArg,
    /// The dead letter's id, as `list` prints it.
    id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `replay` and `purge`.
#[derive(Debug, Args)]
pub(crate) struct ChangeArgs {
    #[command(flatten)]
    list: ListArgs,
    /// The dead letters, by id as `list` prints them.
    ids: Vec<String>,
    /// Every dead letter the filters match (instead of ids).
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// Say what would be done, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// At most this many a second.
    #[arg(long)]
    rate: Option<f64>,
    /// Do not ask (purge).
    #[arg(long)]
    yes: bool,
}

pub(crate) fn parse_time(text: &str) -> Result<SystemTime, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc).into());
    }
    match humantime::parse_duration(text) {
        Ok(age) => Ok(SystemTime::now() - age),
        Err(_) => Err(format!(
            "`{text}` is neither an RFC 3339 time (2026-12-01T10:00:00Z) nor an age (2h, 30m)"
        )),
    }
}

/// The dead-letter queues behind a URL, each with the prefix of its ids.
pub(crate) struct Queues(
    Vec<(&'static str, Arc<dyn Transport>)>,
    /// A listing read as many as it reads at most from a queue: there may be more.
    std::sync::atomic::AtomicBool,
);

impl Queues {
    pub(crate) async fn open(url: &str) -> Result<Self, String> {
        let main = eventbus::transport::connect(url)
            .await
            .map_err(|e| e.to_string())?;
        #[allow(unused_mut)]
        let mut queues = vec![("", main)];
        #[cfg(feature = "redis")]
        if matches!(
            url.split_once("://").map(|(s, _)| s),
            Some("redis" | "rediss")
        ) {
            let celery = eventbus::celery::CeleryTransport::connect(
                url,
                Vec::new(),
                eventbus::celery::CeleryOptions::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
            queues.push(("celery:", Arc::new(celery)));
        }
        Ok(Queues(queues, std::sync::atomic::AtomicBool::new(false)))
    }

    /// Every dead letter, ids prefixed, oldest first.
    pub(crate) async fn all(&self) -> Result<Vec<DeadLetter>, String> {
        let mut out = Vec::new();
        for (prefix, t) in &self.0 {
            let read = t
                .dead_letters(READ_AT_MOST)
                .await
                .map_err(|e| e.to_string())?;
            if read.len() >= READ_AT_MOST {
                self.1.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            for mut dl in read {
                dl.id = format!("{prefix}{}", dl.id);
                out.push(dl);
            }
        }
        out.sort_by_key(|d| d.time);
        Ok(out)
    }

    /// Whether a queue held more than a listing reads (counts are then lower bounds).
    fn capped(&self) -> bool {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn split<'a>(&self, id: &'a str) -> (&Arc<dyn Transport>, &'a str) {
        for (prefix, t) in self.0.iter().rev() {
            if !prefix.is_empty()
                && let Some(rest) = id.strip_prefix(prefix)
            {
                return (t, rest);
            }
        }
        (&self.0[0].1, id)
    }

    pub(crate) async fn replay(&self, id: &str) -> Result<bool, String> {
        let (t, id) = self.split(id);
        t.replay(id).await.map_err(|e| e.to_string())
    }

    async fn delete(&self, id: &str) -> Result<bool, String> {
        let (t, id) = self.split(id);
        t.delete_dead_letter(id).await.map_err(|e| e.to_string())
    }
}

impl ListArgs {
    fn matches(&self, d: &DeadLetter) -> bool {
        self.event_type
            .as_ref()
            .is_none_or(|t| d.event_type.as_deref() == Some(t.as_str()))
            && self.group.as_ref().is_none_or(|g| &d.group == g)
            && self.since.is_none_or(|t| d.time >= t)
            && self.until.is_none_or(|t| d.time <= t)
            && self
                .error_contains
                .as_ref()
                .is_none_or(|e| d.error.contains(e.as_str()))
    }
}

/// Control characters escaped: a payload or error never writes raw ones to a terminal.
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

pub(crate) fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn to_json(d: &DeadLetter) -> Value {
    let payload = serde_json::from_slice::<Value>(&d.payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&d.payload).into_owned()));
    json!({
        "id": d.id,
        "time": rfc3339(d.time),
        "group": d.group,
        "handler": d.handler,
        "type": d.event_type,
        "event_id": d.event_id,
        "origin": d.origin,
        "attempts": d.attempts,
        "error": d.error,
        "payload": payload,
    })
}

/// The class of an error, for `stats`: its text up to the first `:`, with
/// numbers replaced by `N`.
fn error_class(error: &str) -> String {
    let head = error.split(':').next().unwrap_or(error).trim();
    let mut out = String::new();
    let mut in_number = false;
    for c in head.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    printable(&out)
}

fn truncate(text: &str, n: usize) -> String {
    let text = printable(text);
    if text.chars().count() <= n {
        text
    } else {
        let cut: String = text.chars().take(n.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Runs `eventbus dlq ...`; `Ok(true)` when a check found a problem (exit code 3).
pub(crate) async fn run(command: &DlqCommand) -> Result<bool, String> {
    let queues = Queues::open(command.url()).await?;
    match command {
        DlqCommand::List(args) => list(&queues, args).await,
        DlqCommand::Stats(args) => stats(&queues, args).await,
        DlqCommand::Show(args) => {
            let all = queues.all().await?;
            let Some(d) = all.iter().find(|d| d.id == args.id) else {
                return Err(format!(
                    "no dead letter `{}` in the queue; `eventbus dlq list` shows the ids",
                    printable(&args.id)
                ));
            };
            if args.json {
                println!("{}", to_json(d));
            } else {
                let v = to_json(d);
                for key in [
                    "id", "time", "group", "handler", "type", "event_id", "origin", "attempts",
                    "error",
                ] {
                    let value = match &v[key] {
                        Value::String(s) => printable(s),
                        Value::Null => "-".to_owned(),
                        other => other.to_string(),
                    };
                    println!("{key:<9} {value}");
                }
                let payload = serde_json::to_string_pretty(&v["payload"]).unwrap_or_default();
                println!("payload\n{}", printable(&payload).replace("\\n", "\n"));
            }
            Ok(false)
        }
        DlqCommand::Replay(args) => change(&queues, args, true).await,
        DlqCommand::Purge(args) => change(&queues, args, false).await,
    }
}

async fn list(queues: &Queues, args: &ListArgs) -> Result<bool, String> {
    let all = queues.all().await?;
    let total = all.len();
    let matched: Vec<&DeadLetter> = all.iter().filter(|d| args.matches(d)).collect();
    let shown = &matched[..matched.len().min(args.limit)];
    if args.json {
        println!(
            "{}",
            json!({
                "dead_letters": shown.iter().map(|d| to_json(d)).collect::<Vec<_>>(),
                "matched": matched.len(),
                "total": total,
                "total_is_at_least": queues.capped(),
            })
        );
    } else {
        for d in shown {
            println!(
                "{}  {}  {}  {}  attempts {}  {}",
                d.id,
                rfc3339(d.time),
                printable(&d.group),
                printable(d.event_type.as_deref().unwrap_or("?")),
                d.attempts,
                truncate(&d.error, 80)
            );
        }
        let more = if shown.len() < matched.len() {
            format!(" (showing {}: --limit)", shown.len())
        } else {
            String::new()
        };
        let at_least = if queues.capped() { "at least " } else { "" };
        println!("{} of {at_least}{total} dead letters{more}", matched.len());
    }
    Ok(args.max.is_some_and(|max| matched.len() > max))
}

async fn stats(queues: &Queues, args: &ListArgs) -> Result<bool, String> {
    let all = queues.all().await?;
    let matched: Vec<&DeadLetter> = all.iter().filter(|d| args.matches(d)).collect();
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_group: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_error: BTreeMap<String, usize> = BTreeMap::new();
    for d in &matched {
        *by_type
            .entry(d.event_type.clone().unwrap_or_else(|| "?".into()))
            .or_default() += 1;
        *by_group.entry(d.group.clone()).or_default() += 1;
        *by_error.entry(error_class(&d.error)).or_default() += 1;
    }
    if args.json {
        println!(
            "{}",
            json!({
                "total": matched.len(),
                "by_type": by_type,
                "by_group": by_group,
                "by_error": by_error,
                "oldest": matched.first().map(|d| rfc3339(d.time)),
            })
        );
    } else {
        println!("{} dead letters", matched.len());
        for (title, counts) in [
            ("type", &by_type),
            ("group", &by_group),
            ("error", &by_error),
        ] {
            println!("by {title}:");
            for (k, n) in counts {
                println!("  {n:>7}  {}", printable(k));
            }
        }
    }
    Ok(args.max.is_some_and(|max| matched.len() > max))
}

async fn change(queues: &Queues, args: &ChangeArgs, replay: bool) -> Result<bool, String> {
    let verb = if replay { "replay" } else { "purge" };
    let ids: Vec<String> = if args.all {
        let all = queues.all().await?;
        all.into_iter()
            .filter(|d| args.list.matches(d))
            .map(|d| d.id)
            .collect()
    } else if args.ids.is_empty() {
        return Err(format!(
            "give the ids to {verb}, or --all (with --type, --group, --since, --until, --error-contains)"
        ));
    } else {
        args.ids.clone()
    };
    if args.dry_run {
        for id in &ids {
            println!("would {verb} {id}");
        }
        println!("{} dead letters would be {verb}ed (dry run)", ids.len());
        return Ok(false);
    }
    if !replay && !args.yes {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            return Err(format!(
                "purge removes {} dead letters for good: add --yes (stdin is not a terminal to ask on)",
                ids.len()
            ));
        }
        eprint!("remove {} dead letters for good? [y/N] ", ids.len());
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err("nothing removed".into());
        }
    }
    let bar = (ids.len() > 1 && !args.list.json).then(|| {
        let bar = indicatif::ProgressBar::new(ids.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{verb} {pos}/{len} {wide_bar} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .with_key("verb", {
                    let v = verb.to_owned();
                    move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&v);
                    }
                }),
        );
        bar
    });
    let pause = args
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let (mut done, mut missing) = (Vec::new(), Vec::new());
    for id in &ids {
        let found = if replay {
            queues.replay(id).await?
        } else {
            queues.delete(id).await?
        };
        if found {
            done.push(id.clone());
        } else {
            missing.push(id.clone());
        }
        if let Some(bar) = &bar {
            bar.inc(1);
        }
        if let Some(p) = pause {
            tokio::time::sleep(p).await;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.list.json {
        println!("{}", json!({ verb: done, "missing": missing }));
    } else {
        for id in &done {
            println!("{verb}ed {id}");
        }
        println!("{} dead letters {verb}ed", done.len());
    }
    if missing.is_empty() {
        Ok(false)
    } else {
        Err(format!(
            "not in the dead-letter queue (already {verb}ed?): {}",
            missing
                .iter()
                .map(|m| printable(m))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}
