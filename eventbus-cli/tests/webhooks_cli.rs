//! `eventbus webhooks list|show|attempts|recover`, run as the built binary
//! against a real subscriptions API with a hub in this process (the memory
//! bus, axum on loopback, two receivers: one taking deliveries, one
//! answering 410): `--json` and the tables, the bearer token from
//! `--token` and `EVENTBUS_TOKEN`, re-sending a dead-lettered delivery, and
//! the exit codes (0 ok, 1 error in one sentence, 2 usage).

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use eventbus::http::guard::SinkPolicy;
use eventbus::http::webhooks::{Hub, HubOptions, MemoryStore};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const TOKEN: &str = "tok-hunter2";

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, eventbus::Event)]
#[event("cli_test.hooked", source = "cli-test")]
struct Hooked {
    n: u32,
}

/// `eventbus args...` with `env`, no token from the outer environment.
async fn eventbus(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_eventbus"));
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("EVENTBUS_TOKEN")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().await.expect("run eventbus")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status
        .code()
        .unwrap_or_else(|| panic!("no exit code: {o:?}"))
}

/// The one line of JSON `--json` prints.
fn json(o: &Output) -> Value {
    assert_eq!(code(o), 0, "{}", stderr(o));
    let text = stdout(o);
    assert_eq!(text.lines().count(), 1, "one line of JSON: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Exit 1, nothing on stdout, one sentence on stderr without the token.
fn one_sentence_error(o: &Output) -> String {
    let text = stderr(o);
    assert_eq!(code(o), 1, "{text}");
    assert!(o.stdout.is_empty(), "{}", stdout(o));
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    assert!(text.starts_with("eventbus: webhooks "), "{text}");
    assert!(!text.contains(TOKEN), "the token leaked: {text}");
    text
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// A receiver answering the OPTIONS handshake, then `status` to deliveries.
async fn receiver(status: StatusCode) -> String {
    let app = axum::Router::new().fallback(move |method: Method| async move {
        if method == Method::OPTIONS {
            (StatusCode::OK, [("webhook-allowed-origin", "*")]).into_response()
        } else {
            status.into_response()
        }
    });
    serve(app).await
}

/// The service: a bus, a hub, the subscriptions API behind `TOKEN`.
struct Service {
    base: String,
    bus: eventbus::Bus,
    _stop: tokio_util::sync::DropGuard,
}

impl Service {
    async fn start() -> Self {
        let bus = eventbus::Bus::builder()
            .service("cli-test")
            .without_registered()
            .event::<Hooked>()
            .connect("memory://")
            .await
            .unwrap();
        let policy = SinkPolicy::new().allow("127.0.0.0/8").unwrap();
        let options = HubOptions {
            schedule: vec![Duration::from_millis(100)],
            jitter: 0.0,
            refresh: Duration::from_millis(100),
            ..HubOptions::default()
        };
        let hub = Hub::new(&bus, MemoryStore::new(), policy, options).unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn({
            let hub = hub.clone();
            let stop = stop.clone();
            async move { hub.run(stop).await }
        });
        let router = eventbus::http::Http::new(&bus)
            .bearer_token(TOKEN)
            .webhooks(hub)
            .router();
        Self {
            base: serve(router).await,
            bus,
            _stop: stop.drop_guard(),
        }
    }

    /// Creates a subscription to `sink`; its id.
    async fn subscribe(&self, sink: &str) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/subscriptions", self.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(serde_json::json!({ "sink": sink, "types": ["cli_test.hooked"] }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    /// `webhooks <command> <args> --url <base> --token TOKEN`.
    async fn cli(&self, args: &[&str]) -> Output {
        let mut all = vec!["webhooks"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--url", &self.base, "--token", TOKEN]);
        eventbus(&all, &[]).await
    }

    /// Waits until `webhooks show id --json` says `state`.
    async fn wait_state(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = json(&self.cli(&["show", id, "--json"]).await);
            if v["status"]["state"] == state {
                return v;
            }
            assert!(Instant::now() < deadline, "{id} never became {state}: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_attempts_and_recover_over_the_api() {
    let svc = Service::start().await;
    let ok = svc.subscribe(&receiver(StatusCode::OK).await).await;
    let gone = svc.subscribe(&receiver(StatusCode::GONE).await).await;
    svc.wait_state(&ok, "active").await;
    svc.wait_state(&gone, "active").await;
    svc.bus.publish(Hooked { n: 1 }).await.unwrap();
    let disabled = svc.wait_state(&gone, "disabled").await;
    assert!(
        disabled["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("410"),
        "{disabled}"
    );

    // list --json: the API's array.
    let list = json(&svc.cli(&["list", "--json"]).await);
    let mut states: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().into(),
                s["status"]["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    states.sort();
    let mut expected = vec![
        (ok.clone(), "active".to_owned()),
        (gone.clone(), "disabled".to_owned()),
    ];
    expected.sort();
    assert_eq!(states, expected);

    // list: a table, one row per subscription.
    let out = svc.cli(&["list"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0]
            .split_whitespace()
            .eq(["ID", "STATE", "SINK", "TYPES"]),
        "{text}"
    );
    for (id, state) in &expected {
        let row = lines
            .iter()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            row.contains(state.as_str()) && row.ends_with("cli_test.hooked"),
            "{row}"
        );
    }

    // show: `field value` lines, the reason of the 410 among them.
    let out = svc.cli(&["show", &gone]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("id             {gone}")), "{text}");
    assert!(text.contains("state          disabled"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("reason") && l.contains("410")),
        "{text}"
    );

    // attempts: the 410, as JSON and as a table.
    let attempts = json(&svc.cli(&["attempts", &gone, "--json"]).await);
    assert_eq!(attempts[0]["outcome"], "gone", "{attempts}");
    assert_eq!(attempts[0]["status"], 410, "{attempts}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivered = loop {
        let a = json(&svc.cli(&["attempts", &ok, "--json", "--limit", "5"]).await);
        if a[0]["outcome"] == "delivered" {
            break a;
        }
        assert!(Instant::now() < deadline, "no delivery recorded: {a}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(delivered.as_array().unwrap().len(), 1, "{delivered}");
    let out = svc.cli(&["attempts", &gone]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0]
            .split_whitespace()
            .eq(["AT", "EVENT", "TYPE", "ATTEMPT", "STATUS", "OUTCOME", "MS"]),
        "{text}"
    );
    assert!(
        lines[1].contains("cli_test.hooked")
            && lines[1].contains(" 410 ")
            && lines[1].contains(" gone "),
        "{text}"
    );

    // recover: the dead-lettered delivery of the 410 is re-sent.
    let recovered = json(
        &svc.cli(&[
            "recover",
            &gone,
            "--since",
            "2000-01-01T00:00:00Z",
            "--json",
        ])
        .await,
    );
    assert_eq!(recovered, serde_json::json!({ "replayed": 1 }));
    let out = svc
        .cli(&["recover", &ok, "--since", "2000-01-01T00:00:00Z"])
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "0 delivery(ies) re-sent\n");

    // The token from the environment does as well as --token.
    let out = eventbus(
        &["webhooks", "list", "--url", &svc.base, "--json"],
        &[("EVENTBUS_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(json(&out).as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_are_one_sentence_and_exit_1() {
    let svc = Service::start().await;

    // No token: 401, and what to do.
    let out = eventbus(&["webhooks", "list", "--url", &svc.base], &[]).await;
    let text = one_sentence_error(&out);
    assert!(text.contains("401") && text.contains("--token"), "{text}");
    // A wrong one: the same, and the token given is not echoed.
    let out = eventbus(
        &[
            "webhooks",
            "list",
            "--url",
            &svc.base,
            "--token",
            "tok-hunter2-wrong",
        ],
        &[],
    )
    .await;
    let text = one_sentence_error(&out);
    assert!(text.contains("401") && !text.contains("wrong"), "{text}");

    // An unknown subscription: the API's reason.
    for args in [
        &["show", "nope"][..],
        &["attempts", "nope"],
        &["recover", "nope", "--since", "2026-12-01T00:00:00Z"],
    ] {
        let text = one_sentence_error(&svc.cli(args).await);
        assert!(
            text.contains("404") && text.contains("no subscription `nope`"),
            "{text}"
        );
    }
    // A bad time: the API's 400, in one sentence.
    let sub = svc.subscribe(&receiver(StatusCode::OK).await).await;
    let text = one_sentence_error(&svc.cli(&["recover", &sub, "--since", "yesterday"]).await);
    assert!(text.contains("400") && text.contains("RFC 3339"), "{text}");

    // Nothing listening: says so.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let text = one_sentence_error(&eventbus(&["webhooks", "list", "--url", &url], &[]).await);
    assert!(
        text.contains("cannot reach") && text.contains("--url"),
        "{text}"
    );

    // A service without a hub (a 404 that is not the API's).
    let plain = serve(axum::Router::new()).await;
    let text = one_sentence_error(&eventbus(&["webhooks", "list", "--url", &plain], &[]).await);
    assert!(
        text.contains("404") && text.contains("webhook hub"),
        "{text}"
    );
}

#[tokio::test]
async fn usage_mistakes_exit_2_and_help_names_the_commands() {
    for args in [
        &["webhooks"][..],
        &["webhooks", "show"],
        &["webhooks", "attempts", "x", "--limit", "0"],
        &["webhooks", "recover", "x"],
        &["webhooks", "list", "--url="],
        &["webhooks", "frob"],
    ] {
        let out = eventbus(args, &[]).await;
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
    }
    let out = eventbus(&["webhooks", "--help"], &[]).await;
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    for command in ["list", "show", "attempts", "recover"] {
        assert!(text.contains(command), "{text}");
    }
    let out = eventbus(
        &["webhooks", "list", "--help"],
        &[("EVENTBUS_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    for option in [
        "--url",
        "--token",
        "EVENTBUS_TOKEN",
        "--json",
        "http://127.0.0.1:8080",
    ] {
        assert!(text.contains(option), "lacks {option}: {text}");
    }
    assert!(!text.contains(TOKEN), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_subscriptions_and_their_attempts() {
    let svc = Service::start().await;
    let ok = svc.subscribe(&receiver(StatusCode::OK).await).await;
    svc.wait_state(&ok, "active").await;
    svc.bus.publish(Hooked { n: 1 }).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while json(&svc.cli(&["attempts", &ok, "--json"]).await)
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        assert!(Instant::now() < deadline, "a delivery attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut dash = std::process::Command::new(env!("CARGO_BIN_EXE_eventbus"))
        .args([
            "dashboard",
            "--transport-url",
            "memory://",
            "--bind",
            &addr.to_string(),
        ])
        .args(["--webhooks-url", &svc.base, "--webhooks-token", TOKEN])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let html = loop {
        if let Ok(r) = reqwest::get(format!("{base}/webhooks")).await {
            break r.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "the dashboard did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        html.contains(&format!(">{ok}</a></td><td>active</td>")),
        "{html}"
    );
    assert!(html.contains("cli_test.hooked"), "{html}");
    let attempts = reqwest::get(format!("{base}/webhooks/{ok}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(attempts.contains("<td>cli_test.hooked</td>"), "{attempts}");
    assert!(attempts.contains("<td>200</td>"), "{attempts}");
    let _ = dash.kill();
    let _ = dash.wait();
}
