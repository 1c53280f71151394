//! The operator commands on `memory://`: a transport that lives in one
//! process, so the command's own is empty. They work and say so (counts of
//! zero, `--json` parsed back), and what needs a shared server says which.

use std::process::{Output, Stdio};

use serde_json::Value;

async fn eventbus(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_eventbus"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("EVENTBUS_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run eventbus")
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test]
async fn the_commands_on_memory() {
    let list = json(&eventbus(&["dlq", "list", "--transport-url", "memory://", "--json"]).await);
    assert_eq!(
        (list["matched"].as_u64(), list["total"].as_u64()),
        (Some(0), Some(0))
    );
    let stats = json(&eventbus(&["dlq", "stats", "--transport-url", "memory://", "--json"]).await);
    assert_eq!(stats["total"], 0);
    let text = eventbus(&["dlq", "list", "--transport-url", "memory://", "--max", "0"]).await;
    assert_eq!(text.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&text.stdout).contains("0 of 0 dead letters"));
    let missing = eventbus(&["dlq", "replay", "--transport-url", "memory://", "7"]).await;
    assert_eq!(missing.status.code(), Some(1));
    let published = json(
        &eventbus(&[
            "publish",
            "--transport-url",
            "memory://",
            "cli_memory.note",
            "{\"n\": 1}",
            "--json",
        ])
        .await,
    );
    assert_eq!(published["type"], "cli_memory.note");
    // EVENTBUS_URL is what --transport-url defaults to.
    let from_env = tokio::process::Command::new(env!("CARGO_BIN_EXE_eventbus"))
        .args(["dlq", "list", "--json"])
        .env("EVENTBUS_URL", "memory://")
        .output()
        .await
        .unwrap();
    assert_eq!(json(&from_env)["total"], 0);
    let no_url = eventbus(&["dlq", "list"]).await;
    assert_eq!(
        no_url.status.code(),
        Some(2),
        "a missing --transport-url is a usage mistake"
    );
    #[cfg(feature = "redis")]
    {
        let groups = eventbus(&["groups", "--transport-url", "memory://"]).await;
        assert_eq!(groups.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&groups.stderr).contains("keeps them in one process"));
    }
    let help = eventbus(&["--help"]).await;
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for command in ["dlq", "tail", "publish", "dashboard", "relay", "webhooks"] {
        assert!(help.contains(command), "{command} in --help: {help}");
    }
}
