//! `eventbus dashboard`: server-rendered HTML pages (no JavaScript) that read
//! the transport (and the outbox database, when given) on each request and
//! keep no state of their own. Read-only unless started with
//! `--allow-write`, which needs a token; binds to loopback by default.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use clap::Args;
use serde::Deserialize;

use crate::dlq::Queues;

/// Options of `dashboard`.
#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// The transport's URL (`redis://host:6379/0`); as the library reads `EVENTBUS_URL`.
    #[arg(long, env = "EVENTBUS_URL", value_parser = crate::non_empty)]
    pub(crate) transport_url: String,
    /// Where to listen (loopback by default: the pages show event payloads).
    #[arg(long, default_value = "127.0.0.1:8088")]
    bind: SocketAddr,
    /// Allow replaying dead letters from the pages (each write needs --token).
    #[arg(long)]
    allow_write: bool,
    /// The bearer token of writes (`Authorization: Bearer ...`, or the pages' form field).
    #[arg(long, env = "EVENTBUS_DASHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The outbox database, for the outbox page (`postgres://...`, `sqlite:...`).
    #[arg(long)]
    database_url: Option<String>,
    /// A service's catalogue (`catalog.json`, from `cargo run -- docs`), for
    /// the schedules page: when each schedule fires next and last fired.
    /// Repeat for more services.
    #[arg(long)]
    catalog: Vec<std::path::PathBuf>,
    /// A service's base URL whose webhook subscriptions API the webhooks page reads.
    #[arg(long)]
    webhooks_url: Option<String>,
    /// The bearer token of that API.
    #[arg(long, env = "EVENTBUS_TOKEN", hide_env_values = true)]
    webhooks_token: Option<String>,
}

struct App {
    queues: Queues,
    transport: String,
    /// The URL itself (the groups page reads the server with it).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    url: String,
    write_token: Option<String>,
    database_url: Option<String>,
    webhooks: Option<crate::webhooks::Common>,
    /// `(service, schedule)` of the catalogues given.
    schedules: Vec<(String, eventbus_catalog::ScheduleDoc)>,
}

type Shared = Arc<App>;

/// Runs the dashboard until SIGINT/SIGTERM.
pub(crate) async fn run(args: &DashboardArgs) -> Result<(), String> {
    let write_token = match (args.allow_write, &args.token) {
        (false, _) => None,
        (true, Some(t)) if !t.trim().is_empty() => Some(t.clone()),
        (true, _) => {
            return Err(
                "--allow-write needs a token: pass --token or set EVENTBUS_DASHBOARD_TOKEN".into(),
            );
        }
    };
    let mut schedules = Vec::new();
    for path in &args.catalog {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the catalogue {}: {e}", path.display()))?;
        let catalog: eventbus_catalog::Catalog = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} is not a catalogue (`cargo run -- docs` writes catalog.json): {e}",
                path.display()
            )
        })?;
        for s in &catalog.schedules {
            schedules.push((catalog.service.clone(), s.clone()));
        }
    }
    let queues = Queues::open(&args.transport_url).await?;
    let app = Arc::new(App {
        queues,
        transport: eventbus::transport::redact(&args.transport_url),
        url: args.transport_url.clone(),
        write_token,
        database_url: args.database_url.clone(),
        webhooks: args
            .webhooks_url
            .as_ref()
            .map(|url| crate::webhooks::Common {
                url: url.clone(),
                token: args.webhooks_token.clone(),
                json: false,
            }),
        schedules,
    });
    let router = axum::Router::new()
        .route("/", get(overview))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/{id}", get(dead_letter))
        .route("/dead-letters/{id}/replay", post(replay))
        .route("/outbox", get(outbox))
        .route("/groups", get(groups))
        .route("/webhooks", get(webhooks))
        .route("/schedules", get(schedules_page))
        .route("/outbox/retry-failed", post(outbox_retry))
        .route("/webhooks/{id}", get(webhook_attempts))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}: {e}; pick a free address with --bind",
                args.bind
            )
        })?;
    let mode = if app.write_token.is_some() {
        "replays allowed with the token"
    } else {
        "read-only"
    };
    println!(
        "eventbus dashboard on http://{} ({}, {mode})",
        args.bind, app.transport
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(crate::stop_signal())
        .await
        .map_err(|e| format!("the dashboard stopped: {e}"))
}

/// `text` for HTML: `&<>"'` as entities, control characters escaped.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push('\n'),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// A query-string value.
fn q(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

fn page(app: &App, title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · eventbus</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1b1f24; }}
header {{ background: #1b1f24; color: #fff; padding: .6em 1em; }}
header a {{ color: #9cdcfe; margin-right: 1em; text-decoration: none; }}
main {{ padding: 1em; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .3em .5em; text-align: left; vertical-align: top; }}
pre {{ background: #f4f4f4; padding: .6em; overflow: auto; }}
.flash {{ background: #e6ffed; border: 1px solid #34d058; padding: .5em; }}
.error {{ background: #ffeef0; border: 1px solid #d73a49; padding: .5em; }}
</style></head><body>
<header><strong>eventbus</strong> · {transport} · <a href="/">overview</a><a href="/groups">groups</a><a href="/dead-letters">dead letters</a><a href="/schedules">schedules</a><a href="/outbox">outbox</a><a href="/webhooks">webhooks</a></header>
<main><h1>{title}</h1>
{body}
</main></body></html>"#,
        title = esc(title),
        transport = esc(&app.transport),
    ))
}

fn failure(app: &App, status: StatusCode, message: &str) -> Response {
    (
        status,
        page(
            app,
            "error",
            &format!(r#"<p class="error">{}</p>"#, esc(message)),
        ),
    )
        .into_response()
}

async fn overview(State(app): State<Shared>) -> Response {
    let all = match app.queues.all().await {
        Ok(all) => all,
        Err(e) => return failure(&app, StatusCode::BAD_GATEWAY, &e),
    };
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    for d in &all {
        *by_type
            .entry(d.event_type.clone().unwrap_or_else(|| "?".into()))
            .or_default() += 1;
    }
    let mut body = format!(
        r#"<p id="dead-letter-count"><a href="/dead-letters">{} dead letters</a></p><table><tr><th>type</th><th>dead letters</th></tr>"#,
        all.len()
    );
    for (ty, n) in by_type {
        let _ = write!(
            body,
            r#"<tr><td><a href="/dead-letters?type={}">{}</a></td><td>{n}</td></tr>"#,
            q(&ty),
            esc(&ty)
        );
    }
    body.push_str("</table>");
    page(&app, "overview", &body).into_response()
}

#[derive(Debug, Deserialize, Default)]
struct Filters {
    #[serde(rename = "type")]
    event_type: Option<String>,
    group: Option<String>,
    error: Option<String>,
    replayed: Option<String>,
}

/// A filter's value, unless blank.
fn keep(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

async fn dead_letters(State(app): State<Shared>, Query(f): Query<Filters>) -> Response {
    let all = match app.queues.all().await {
        Ok(all) => all,
        Err(e) => return failure(&app, StatusCode::BAD_GATEWAY, &e),
    };
    let matched: Vec<_> = all
        .iter()
        .filter(|d| keep(&f.event_type).is_none_or(|t| d.event_type.as_deref() == Some(t)))
        .filter(|d| keep(&f.group).is_none_or(|g| d.group == g))
        .filter(|d| keep(&f.error).is_none_or(|e| d.error.contains(e)))
        .collect();
    let mut body = String::new();
    if let Some(id) = &f.replayed {
        let _ = write!(
            body,
            r#"<p class="flash" id="flash">Replayed {}: it is on its way to its group.</p>"#,
            esc(id)
        );
    }
    let _ = write!(
        body,
        r#"<form method="get"><input name="type" placeholder="type" value="{}"> <input name="group" placeholder="group" value="{}"> <input name="error" placeholder="error contains" value="{}"> <button>filter</button></form>
<p id="count">{} of {} dead letters</p>
<table id="dead-letters"><tr><th>id</th><th>time</th><th>group</th><th>type</th><th>attempts</th><th>error</th></tr>"#,
        esc(keep(&f.event_type).unwrap_or("")),
        esc(keep(&f.group).unwrap_or("")),
        esc(keep(&f.error).unwrap_or("")),
        matched.len(),
        all.len()
    );
    for d in matched.iter().take(500) {
        let _ = write!(
            body,
            r#"<tr><td><a href="/dead-letters/{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            q(&d.id),
            esc(&d.id),
            crate::dlq::rfc3339(d.time),
            esc(&d.group),
            esc(d.event_type.as_deref().unwrap_or("?")),
            d.attempts,
            esc(&d.error)
        );
    }
    body.push_str("</table>");
    page(&app, "dead letters", &body).into_response()
}

async fn dead_letter(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let all = match app.queues.all().await {
        Ok(all) => all,
        Err(e) => return failure(&app, StatusCode::BAD_GATEWAY, &e),
    };
    let Some(d) = all.iter().find(|d| d.id == id) else {
        return failure(
            &app,
            StatusCode::NOT_FOUND,
            &format!("no dead letter {id} (replayed or purged?)"),
        );
    };
    let payload = serde_json::from_slice::<serde_json::Value>(&d.payload)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(&d.payload).into_owned());
    let mut body = format!(
        r#"<table id="attributes">
<tr><th>id</th><td>{}</td></tr><tr><th>time</th><td>{}</td></tr><tr><th>group</th><td>{}</td></tr>
<tr><th>handler</th><td>{}</td></tr><tr><th>type</th><td>{}</td></tr><tr><th>event id</th><td>{}</td></tr>
<tr><th>attempts</th><td>{}</td></tr><tr><th>last error</th><td id="error">{}</td></tr></table>
<h2>payload</h2><pre id="payload">{}</pre>"#,
        esc(&d.id),
        crate::dlq::rfc3339(d.time),
        esc(&d.group),
        esc(&d.handler),
        esc(d.event_type.as_deref().unwrap_or("?")),
        esc(d.event_id.as_deref().unwrap_or("-")),
        d.attempts,
        esc(&d.error),
        esc(&payload)
    );
    if app.write_token.is_some() {
        let _ = write!(
            body,
            r#"<form method="post" action="/dead-letters/{}/replay" id="replay-form"><input type="password" name="token" placeholder="token" required> <button id="replay">replay to {}</button></form>"#,
            q(&d.id),
            esc(&d.group)
        );
    } else {
        body.push_str("<p>Read-only: start the dashboard with --allow-write --token ... to replay from here.</p>");
    }
    page(&app, &format!("dead letter {}", d.id), &body).into_response()
}

#[derive(Debug, Deserialize)]
struct ReplayForm {
    #[serde(default)]
    token: String,
}

async fn replay(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<Form<ReplayForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if let Err(denied) = authorize(&app, &headers, form.ok().map(|f| f.0.token)) {
        return *denied;
    }
    match app.queues.replay(&id).await {
        Ok(true) => Redirect::to(&format!("/dead-letters?replayed={}", q(&id))).into_response(),
        Ok(false) => failure(
            &app,
            StatusCode::NOT_FOUND,
            &format!("no dead letter {id} (replayed already?)"),
        ),
        Err(e) => failure(&app, StatusCode::BAD_GATEWAY, &e),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn outbox(State(app): State<Shared>) -> Response {
    let Some(url) = &app.database_url else {
        return page(
            &app,
            "outbox",
            "<p>No outbox database: start the dashboard with --database-url to see it.</p>",
        )
        .into_response();
    };
    match outbox_counts(url).await {
        Ok(mut body) => {
            if app.write_token.is_some() {
                body.push_str(r#"<form method="post" action="/outbox/retry-failed" id="retry-form"><input type="password" name="token" placeholder="token" required> <button id="retry-failed">make the failed rows pending again</button></form>"#);
            }
            page(&app, "outbox", &body).into_response()
        }
        Err(e) => failure(&app, StatusCode::BAD_GATEWAY, &e),
    }
}

async fn outbox_retry(
    State(app): State<Shared>,
    headers: HeaderMap,
    form: Result<Form<ReplayForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if let Err(denied) = authorize(&app, &headers, form.ok().map(|f| f.0.token)) {
        return *denied;
    }
    let Some(url) = &app.database_url else {
        return failure(
            &app,
            StatusCode::NOT_FOUND,
            "no outbox database (--database-url)",
        );
    };
    match outbox_retry_failed(url).await {
        Ok(n) => page(
            &app,
            "outbox",
            &format!(r#"<p class="flash" id="flash">{n} failed rows are pending again.</p><p><a href="/outbox">back to the outbox</a></p>"#),
        )
        .into_response(),
        Err(e) => failure(&app, StatusCode::BAD_GATEWAY, &e),
    }
}

/// Checks a write's token; the page to answer with when it is refused.
fn authorize(
    app: &App,
    headers: &HeaderMap,
    form_token: Option<String>,
) -> Result<(), Box<Response>> {
    let Some(expected) = &app.write_token else {
        return Err(Box::new(failure(
            app,
            StatusCode::FORBIDDEN,
            "the dashboard is read-only: start it with --allow-write --token ...",
        )));
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let given = bearer.or(form_token).unwrap_or_default();
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(Box::new(failure(
            app,
            StatusCode::UNAUTHORIZED,
            "wrong or missing token",
        )))
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
async fn outbox_retry_failed(url: &str) -> Result<u64, String> {
    let db = eventbus::outbox::Database::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    eventbus::outbox::retry_failed(&db)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
async fn outbox_retry_failed(_url: &str) -> Result<u64, String> {
    Err("this eventbus-cli is built without the outbox (features postgres, sqlite)".into())
}

/// When a schedule fires next, from its catalogue entry.
fn next_fire(s: &eventbus_catalog::ScheduleDoc) -> Result<std::time::SystemTime, String> {
    let name: &'static str = Box::leak(s.name.clone().into_boxed_str());
    let produce = || async { SchedulePage };
    let def = match (&s.every, &s.cron) {
        (Some(every), _) => {
            let every = humantime::parse_duration(every).map_err(|e| e.to_string())?;
            eventbus::ScheduleDef::every(name, every, produce)
        }
        (None, Some(cron)) => eventbus::ScheduleDef::cron(name, cron, s.tz.as_deref(), produce)
            .map_err(|e| e.to_string())?,
        (None, None) => return Err("neither `every` nor `cron`".into()),
    };
    def.next_tick(std::time::SystemTime::now())
        .map_err(|e| e.to_string())
}

/// The event type of the schedules the page evaluates (never published).
#[derive(Debug, Clone, serde::Serialize, Deserialize, schemars::JsonSchema, eventbus::Event)]
#[event("eventbus_cli.schedule_page")]
struct SchedulePage;

/// When schedule `<service>.<name>` last fired (its last claimed tick), on Redis.
async fn last_tick(app: &App, key: &str) -> Option<std::time::SystemTime> {
    #[cfg(feature = "redis")]
    if matches!(
        app.url.split_once("://").map(|(s, _)| s),
        Some("redis" | "rediss")
    ) {
        let client = eventbus::transport::redis::Client::connect_url(&app.url)
            .await
            .ok()?;
        let ms: Option<u64> = client
            .query(
                "GET",
                eventbus::transport::redis::redis::cmd("GET").arg(client.keys().tick(key)),
            )
            .await
            .ok()?;
        return ms.map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
    }
    let _ = (app, key);
    None
}

async fn schedules_page(State(app): State<Shared>) -> Response {
    if app.schedules.is_empty() {
        return page(
            &app,
            "schedules",
            "<p>No schedules: start the dashboard with --catalog path/to/catalog.json (a service's catalogue) to see its schedules.</p>",
        )
        .into_response();
    }
    let mut body = String::from(
        r#"<table id="schedules"><tr><th>service</th><th>schedule</th><th>when</th><th>publishes</th><th>next fire</th><th>last fired</th></tr>"#,
    );
    for (service, s) in &app.schedules {
        let next = match next_fire(s) {
            Ok(t) => crate::dlq::rfc3339(t),
            Err(e) => format!("cannot run: {e}"),
        };
        let last = last_tick(&app, &format!("{service}.{}", s.name))
            .await
            .map_or("-".to_owned(), crate::dlq::rfc3339);
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(service),
            esc(&s.name),
            esc(&s.when),
            esc(&s.event_type),
            esc(&next),
            esc(&last)
        );
    }
    body.push_str("</table>");
    page(&app, "schedules", &body).into_response()
}

async fn webhooks(State(app): State<Shared>) -> Response {
    let Some(api) = &app.webhooks else {
        return page(
            &app,
            "webhooks",
            "<p>No subscriptions API: start the dashboard with --webhooks-url (a service's base URL) to see its webhook subscriptions.</p>",
        )
        .into_response();
    };
    let list = match crate::webhooks::call(api, reqwest::Method::GET, "/subscriptions", None).await
    {
        Ok(v) => v,
        Err(e) => return failure(&app, StatusCode::BAD_GATEWAY, &e),
    };
    let text = crate::webhooks::text;
    let mut body = String::from(
        r#"<table id="subscriptions"><tr><th>id</th><th>state</th><th>sink</th><th>types</th></tr>"#,
    );
    for s in list.as_array().into_iter().flatten() {
        let types = s["types"]
            .as_array()
            .map(|t| t.iter().map(text).collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| "*".into());
        let _ = write!(
            body,
            r#"<tr><td><a href="/webhooks/{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            q(&text(&s["id"])),
            esc(&text(&s["id"])),
            esc(&text(&s["status"]["state"])),
            esc(&text(&s["sink"])),
            esc(&types)
        );
    }
    body.push_str("</table>");
    page(&app, "webhook subscriptions", &body).into_response()
}

async fn webhook_attempts(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let Some(api) = &app.webhooks else {
        return failure(
            &app,
            StatusCode::NOT_FOUND,
            "no subscriptions API (--webhooks-url)",
        );
    };
    let path = format!("/subscriptions/{}/attempts", crate::webhooks::segment(&id));
    let attempts = match crate::webhooks::call(api, reqwest::Method::GET, &path, None).await {
        Ok(v) => v,
        Err(e) => return failure(&app, StatusCode::BAD_GATEWAY, &e),
    };
    let text = crate::webhooks::text;
    let mut body = String::from(
        r#"<table id="attempts"><tr><th>at</th><th>event</th><th>type</th><th>attempt</th><th>status</th><th>outcome</th><th>ms</th></tr>"#,
    );
    for a in attempts.as_array().into_iter().flatten() {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&text(&a["at"])),
            esc(&text(&a["event_id"])),
            esc(&text(&a["event_type"])),
            esc(&text(&a["attempt"])),
            esc(&if a["status"].is_null() {
                "-".to_owned()
            } else {
                text(&a["status"])
            }),
            esc(&text(&a["outcome"])),
            esc(&text(&a["duration_ms"]))
        );
    }
    body.push_str("</table>");
    page(&app, &format!("attempts of {id}"), &body).into_response()
}

#[cfg(feature = "redis")]
async fn groups(State(app): State<Shared>) -> Response {
    let groups = match crate::groups::snapshot(&app.url).await {
        Ok(g) => g,
        Err(e) => return failure(&app, StatusCode::BAD_GATEWAY, &e),
    };
    let mut body = String::from(
        r#"<table id="groups"><tr><th>group</th><th>types</th><th>lag</th><th>in flight</th><th>redelivered</th><th>oldest unsettled</th><th>consumers (alive)</th><th>dead letters</th></tr>"#,
    );
    for (name, g) in &groups {
        let alive = g.consumers.values().filter(|a| **a).count();
        let _ = write!(
            body,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td><a href="/dead-letters?group={}">{}</a></td></tr>"#,
            esc(name),
            esc(&g.types.iter().cloned().collect::<Vec<_>>().join(", ")),
            g.lag,
            g.in_flight,
            g.redelivered,
            g.oldest()
                .map_or("-".to_owned(), |d| format!("{} s", d.as_secs())),
            alive,
            g.consumers.len(),
            q(name),
            g.dead_letters
        );
    }
    body.push_str("</table>");
    page(&app, "groups", &body).into_response()
}

#[cfg(not(feature = "redis"))]
async fn groups(State(app): State<Shared>) -> Response {
    failure(
        &app,
        StatusCode::NOT_IMPLEMENTED,
        "this eventbus-cli is built without Redis (feature redis)",
    )
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
async fn outbox_counts(url: &str) -> Result<String, String> {
    let db = eventbus::outbox::Database::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let c = eventbus::outbox::counts(&db)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!(
        r#"<table id="outbox"><tr><th>pending</th><td>{}</td></tr><tr><th>published</th><td>{}</td></tr><tr><th>failed</th><td>{}</td></tr></table><p>Failed rows are made pending again by <code>eventbus retry-failed</code>.</p>"#,
        c.pending, c.published, c.failed
    ))
}

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
async fn outbox_counts(_url: &str) -> Result<String, String> {
    Err("this eventbus-cli is built without the outbox (features postgres, sqlite)".into())
}
