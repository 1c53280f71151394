//! `eventbus tail`, run as the built binary against a real redis-server:
//! `--from start` reads what the log keeps, in order; the default (`now`)
//! prints only what is published after it started; `--type` filters; a
//! transport without a log (pub/sub) is an error in one sentence.
#![cfg(feature = "redis")]

use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, eventbus::Event)]
#[event("cli_tail.note")]
struct Note {
    n: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, eventbus::Event)]
#[event("cli_tail.other")]
struct Other {
    n: u32,
}

fn command(args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_eventbus"));
    c.args(args)
        .env("RUST_LOG", "warn")
        .env_remove("EVENTBUS_URL")
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn ns(stdout: &[u8]) -> Vec<(String, u64)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v["cursor"].is_string(), "{v}");
            (
                v["event"]["type"].as_str().unwrap().to_owned(),
                v["event"]["data"]["n"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_reads_the_log_and_follows_it() {
    let server = testkit::RedisServer::start().expect("start redis-server");
    let url = server.url();
    let bus = eventbus::Bus::builder()
        .service("clitail")
        .without_registered()
        .connect(&url)
        .await
        .unwrap();
    for n in 1..=3 {
        bus.publish(Note { n }).await.unwrap();
    }
    bus.publish(Other { n: 9 }).await.unwrap();

    let start = command(&[
        "tail",
        "--transport-url",
        &url,
        "--from",
        "start",
        "--count",
        "4",
        "--json",
    ])
    .output()
    .await
    .unwrap();
    assert!(
        start.status.success(),
        "{}",
        String::from_utf8_lossy(&start.stderr)
    );
    let got = ns(&start.stdout);
    let notes: Vec<u64> = got
        .iter()
        .filter(|(t, _)| t == "cli_tail.note")
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(notes, [1, 2, 3], "in publish order: {got:?}");
    assert!(got.contains(&("cli_tail.other".to_owned(), 9)));

    // From now on, one type: only what comes after.
    let child = command(&[
        "tail",
        "--transport-url",
        &url,
        "--type",
        "cli_tail.note",
        "--count",
        "2",
        "--json",
    ])
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    bus.publish(Other { n: 10 }).await.unwrap();
    bus.publish(Note { n: 4 }).await.unwrap();
    bus.publish(Note { n: 5 }).await.unwrap();
    let followed = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("tail stopped after --count")
        .unwrap();
    assert!(
        followed.status.success(),
        "{}",
        String::from_utf8_lossy(&followed.stderr)
    );
    assert_eq!(
        ns(&followed.stdout),
        [
            ("cli_tail.note".to_owned(), 4),
            ("cli_tail.note".to_owned(), 5)
        ]
    );

    // `eventbus publish`, read back by `tail --from <cursor>`.
    let lines = String::from_utf8_lossy(&followed.stdout).into_owned();
    let last: Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    let cursor = last["cursor"].as_str().unwrap().to_owned();
    let published = command(&[
        "publish",
        "--transport-url",
        &url,
        "cli_tail.note",
        "{\"n\": 6}",
        "--subject",
        "s-6",
        "--json",
    ])
    .output()
    .await
    .unwrap();
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let id = serde_json::from_slice::<Value>(&published.stdout).unwrap()["id"].clone();
    let after = command(&[
        "tail",
        "--transport-url",
        &url,
        "--type",
        "cli_tail.note",
        "--from",
        &cursor,
        "--count",
        "1",
        "--json",
    ])
    .output()
    .await
    .unwrap();
    let event: Value = serde_json::from_slice::<Value>(&after.stdout).unwrap()["event"].clone();
    assert_eq!(
        (&event["id"], &event["subject"], &event["data"]["n"]),
        (&id, &Value::from("s-6"), &Value::from(6))
    );
    let bad = command(&[
        "publish",
        "--transport-url",
        &url,
        "cli_tail.note",
        "{not json",
    ])
    .output()
    .await
    .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("the data is not JSON"),
        "{bad:?}"
    );

    // --group (the types a group reads) and --from <time>.
    let _reader = eventbus::Bus::builder()
        .service("clitail")
        .without_registered()
        .handler(eventbus::HandlerDef::new("others", |_: Other| async {}))
        .connect(&url)
        .await
        .unwrap();
    let of_group = command(&[
        "tail",
        "--transport-url",
        &url,
        "--group",
        "clitail.others",
        "--from",
        "1h",
        "--count",
        "2",
        "--json",
    ])
    .output()
    .await
    .unwrap();
    assert!(
        of_group.status.success(),
        "{}",
        String::from_utf8_lossy(&of_group.stderr)
    );
    assert_eq!(
        ns(&of_group.stdout),
        [
            ("cli_tail.other".to_owned(), 9),
            ("cli_tail.other".to_owned(), 10)
        ]
    );
    let future = command(&[
        "tail",
        "--transport-url",
        &url,
        "--from",
        "2999-01-01T00:00:00Z",
        "--count",
        "1",
    ])
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    bus.publish(Note { n: 7 }).await.unwrap();
    let nothing =
        tokio::time::timeout(Duration::from_millis(1500), future.wait_with_output()).await;
    assert!(nothing.is_err(), "nothing is at or after 2999");

    // Pub/sub keeps no log.
    let pubsub = command(&[
        "tail",
        "--transport-url",
        &format!("{url}?mode=pubsub"),
        "--count",
        "1",
    ])
    .output()
    .await
    .unwrap();
    assert_eq!(pubsub.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&pubsub.stderr).contains("keeps no log to tail"),
        "{pubsub:?}"
    );
}
