//! `eventbus webhooks list|show|attempts|recover`: a service's webhook
//! subscriptions API (`eventbus::http::Http::webhooks`), over HTTP.

use clap::{Args, Subcommand};
use serde_json::Value;

/// `webhooks list` / `show` / `attempts` / `recover`.
#[derive(Debug, Subcommand)]
pub(crate) enum WebhooksCommand {
    /// List the subscriptions: id, state, sink, types.
    #[command(
        after_help = "Output: a table (ID, STATE, SINK, TYPES), or with --json the API's array of subscriptions.\n\n\
            Example:\n  eventbus webhooks list --url http://127.0.0.1:8080"
    )]
    List(Common),

    /// Show one subscription.
    #[command(
        after_help = "Output: `field value` lines, or with --json the API's subscription object.\n\n\
            Example:\n  eventbus webhooks show 01939e4c-... --url http://127.0.0.1:8080"
    )]
    Show(IdArgs),

    /// The latest delivery attempts of a subscription, newest first.
    #[command(
        after_help = "Output: a table (AT, EVENT, TYPE, ATTEMPT, STATUS, OUTCOME, MS), or with --json the API's array.\n\n\
            Example:\n  eventbus webhooks attempts 01939e4c-... --limit 20"
    )]
    Attempts(AttemptsArgs),

    /// Re-send a subscription's dead-lettered deliveries between two times.
    #[command(
        long_about = "Re-send the dead-lettered deliveries of a subscription that were dead-lettered \
            between --since and --until (default now), at most 14 days back; prints how many.",
        after_help = "Output: `N delivery(ies) re-sent`, or with --json {\"replayed\":N}.\n\n\
            Example:\n  eventbus webhooks recover 01939e4c-... --since 2026-12-01T00:00:00Z"
    )]
    Recover(RecoverArgs),
}

/// Where the service is, and how to print.
#[derive(Debug, Args)]
pub(crate) struct Common {
    /// The service's base URL (where `/subscriptions` is served).
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:8080",
        value_parser = crate::non_empty
    )]
    pub(crate) url: String,

    /// The bearer token the service's `Http::bearer_token` was given.
    #[arg(
        long,
        env = "EVENTBUS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,

    /// Print the API's JSON, on one line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A subscription's id, and the rest.
#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// The subscription's id.
    #[arg(value_name = "ID")]
    pub(crate) id: String,

    #[command(flatten)]
    pub(crate) common: Common,
}

/// Options of `webhooks attempts`.
#[derive(Debug, Args)]
pub(crate) struct AttemptsArgs {
    #[command(flatten)]
    pub(crate) sub: IdArgs,

    /// At most this many attempts (default 100; the hub keeps the latest 100).
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) limit: Option<usize>,
}

/// Options of `webhooks recover`.
#[derive(Debug, Args)]
pub(crate) struct RecoverArgs {
    #[command(flatten)]
    pub(crate) sub: IdArgs,

    /// From when (RFC 3339, e.g. `2026-12-01T00:00:00Z`).
    #[arg(long, value_name = "TIME")]
    pub(crate) since: String,

    /// Until when (RFC 3339; default now).
    #[arg(long, value_name = "TIME")]
    pub(crate) until: Option<String>,
}

impl WebhooksCommand {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            WebhooksCommand::List(_) => "webhooks list",
            WebhooksCommand::Show(_) => "webhooks show",
            WebhooksCommand::Attempts(_) => "webhooks attempts",
            WebhooksCommand::Recover(_) => "webhooks recover",
        }
    }

    pub(crate) fn common(&self) -> &Common {
        match self {
            WebhooksCommand::List(c) => c,
            WebhooksCommand::Show(a) => &a.common,
            WebhooksCommand::Attempts(a) => &a.sub.common,
            WebhooksCommand::Recover(a) => &a.sub.common,
        }
    }
}

/// A path segment, percent-encoded.
pub(crate) fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One request to the API; its JSON, or a sentence saying what went wrong.
pub(crate) async fn call(
    common: &Common,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let base = common.url.trim_end_matches('/');
    let url = format!("{base}{path}");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let mut request = client.request(method, &url);
    if let Some(token) = &common.token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.map_err(|e| {
        let mut text = format!("cannot reach {}: {e}", eventbus::transport::redact(base));
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        format!("{text}; is the service running, and is --url right?")
    })?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("the answer of {path} broke off: {e}"))?;
    let value: Option<Value> = serde_json::from_slice(&bytes).ok();
    if status.is_success() {
        return value.ok_or_else(|| format!("{path} answered {status} without JSON"));
    }
    // RFC 9457 problem details carry the reason in `detail`.
    let detail = value
        .as_ref()
        .and_then(|v| v["detail"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
    let hint = match status.as_u16() {
        401 => "; give the service's token with --token or EVENTBUS_TOKEN",
        404 if value.is_none() => "; is --url a service with a webhook hub?",
        _ => "",
    };
    Err(format!("{path} answered {status}: {detail}{hint}"))
}

/// Runs one `webhooks` command.
pub(crate) async fn run(command: &WebhooksCommand) -> Result<(), String> {
    let what = command.name();
    let fail = |e: String| format!("{what} failed: {e}");
    let common = command.common();
    let value = match command {
        WebhooksCommand::List(c) => call(c, reqwest::Method::GET, "/subscriptions", None)
            .await
            .map_err(fail)?,
        WebhooksCommand::Show(a) => call(
            common,
            reqwest::Method::GET,
            &format!("/subscriptions/{}", segment(&a.id)),
            None,
        )
        .await
        .map_err(fail)?,
        WebhooksCommand::Attempts(a) => {
            let mut path = format!("/subscriptions/{}/attempts", segment(&a.sub.id));
            if let Some(n) = a.limit {
                path.push_str(&format!("?limit={n}"));
            }
            call(common, reqwest::Method::GET, &path, None)
                .await
                .map_err(fail)?
        }
        WebhooksCommand::Recover(a) => {
            let mut body = serde_json::json!({ "since": a.since });
            if let Some(until) = &a.until {
                body["until"] = until.as_str().into();
            }
            call(
                common,
                reqwest::Method::POST,
                &format!("/subscriptions/{}/recover", segment(&a.sub.id)),
                Some(body),
            )
            .await
            .map_err(fail)?
        }
    };
    if common.json {
        println!("{value}");
        return Ok(());
    }
    match command {
        WebhooksCommand::List(_) => {
            let rows: Vec<Vec<String>> = value
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    vec![
                        text(&s["id"]),
                        text(&s["status"]["state"]),
                        text(&s["sink"]),
                        s["types"]
                            .as_array()
                            .map(|t| t.iter().map(text).collect::<Vec<_>>().join(","))
                            .unwrap_or_else(|| "*".into()),
                    ]
                })
                .collect();
            print!("{}", table(&["ID", "STATE", "SINK", "TYPES"], &rows));
        }
        WebhooksCommand::Show(_) => {
            let mut rows = vec![
                ("id", text(&value["id"])),
                ("sink", text(&value["sink"])),
                ("state", text(&value["status"]["state"])),
            ];
            for (field, key) in [
                ("reason", &value["status"]["reason"]),
                ("types", &value["types"]),
                ("filters", &value["filters"]),
                ("method", &value["protocolsettings"]["method"]),
                ("mode", &value["config"]["mode"]),
                ("created", &value["created"]),
                ("last_success", &value["last_success"]),
                ("failing_since", &value["failing_since"]),
                ("websub", &value["websub"]),
            ] {
                if !key.is_null() {
                    rows.push((field, text(key)));
                }
            }
            for (field, v) in rows {
                println!("{field:<14} {v}");
            }
        }
        WebhooksCommand::Attempts(_) => {
            let rows: Vec<Vec<String>> = value
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    vec![
                        text(&a["at"]),
                        text(&a["event_id"]),
                        text(&a["event_type"]),
                        text(&a["attempt"]),
                        if a["status"].is_null() {
                            "-".into()
                        } else {
                            text(&a["status"])
                        },
                        text(&a["outcome"]),
                        text(&a["duration_ms"]),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["AT", "EVENT", "TYPE", "ATTEMPT", "STATUS", "OUTCOME", "MS"],
                    &rows
                )
            );
        }
        WebhooksCommand::Recover(_) => {
            println!("{} delivery(ies) re-sent", text(&value["replayed"]));
        }
    }
    Ok(())
}

/// A JSON value as a cell: strings bare, the rest as JSON.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Columns padded to their widest cell; the last one unpadded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let t = table(
            &["ID", "STATE"],
            &[
                vec!["a".into(), "active".into()],
                vec!["bbbb".into(), "disabled".into()],
            ],
        );
        assert_eq!(t, "ID    STATE\na     active\nbbbb  disabled\n");
    }

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(segment("01a2-b_c.d~"), "01a2-b_c.d~");
        assert_eq!(segment("../x y"), "..%2Fx%20y");
    }
}
