//! `cargo run --example reviews` gives the same summary on the memory
//! transport and on Redis (`EVENTBUS_URL=redis://...`, a throwaway
//! `redis-server` started by the eventbus-redis harness).
//!
//! Builds the example with the `cargo` that runs this test (same target
//! directory), then runs the binary twice and compares the lines after
//! "summary", which the example prints sorted.
#![cfg(feature = "redis")]

use std::path::PathBuf;
use std::process::Command;

use eventbus_redis::testing::RedisServer;

/// `cargo build --example reviews --features redis`, returning the binary.
fn build_example() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--manifest-path",
            manifest,
            "-p",
            "examples",
            "--example",
            "reviews",
            "--features",
            "redis",
            "--message-format=json",
        ])
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build --example reviews failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "reviews")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported the example's executable")
}

/// Runs the example (on `url`, or the default memory transport) and returns
/// its whole standard output.
fn run(binary: &PathBuf, url: Option<&str>) -> String {
    let mut cmd = Command::new(binary);
    cmd.env_remove("EVENTBUS_URL").env("RUST_LOG", "error");
    if let Some(url) = url {
        cmd.env("EVENTBUS_URL", url);
    }
    let out = cmd.output().expect("run the reviews example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the example failed on {}:\n{stdout}\n{}",
        url.unwrap_or("memory://"),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The lines after the one starting with "summary".
fn summary(stdout: &str) -> Vec<&str> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("summary"));
    assert!(lines.next().is_some(), "no summary in:\n{stdout}");
    lines.collect()
}

#[test]
fn the_reviews_example_gives_the_same_summary_on_memory_and_on_redis() {
    let binary = build_example();
    let memory = run(&binary, None);
    assert!(
        memory.contains("eventbus reviews example on memory"),
        "{memory}"
    );

    let server = RedisServer::start().expect("start redis-server");
    let redis = run(&binary, Some(&server.url()));
    assert!(
        redis.contains("eventbus reviews example on redis-streams"),
        "{redis}"
    );
    // The example really went through Redis.
    let types = server.cmd(&["SMEMBERS", "{eventbus}:types"]).unwrap();
    assert!(types.lines().any(|t| t == "review_created"), "{types}");
    assert_eq!(
        server.cmd(&["XLEN", "{eventbus}:dlq"]).unwrap(),
        "1",
        "the failing email job is in the Redis DLQ"
    );

    let (on_memory, on_redis) = (summary(&memory), summary(&redis));
    assert!(on_memory.len() > 20, "{memory}");
    assert_eq!(
        on_redis, on_memory,
        "the summaries differ\n--- memory:\n{memory}\n--- redis:\n{redis}"
    );
    // The dead-letter section agrees too.
    let dlq = |s: &str| {
        s.lines()
            .skip_while(|l| !l.starts_with("dead-letter queue"))
            .take_while(|l| !l.starts_with("summary"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(dlq(&redis), dlq(&memory));
}
