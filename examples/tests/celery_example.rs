//! `cargo run --example celery`: the example's own [`serve`](celery::serve)
//! on a private redis-server, with its Python side (`examples/celery/peer.py`):
//! `peer.py send` is Django's `send_task` of the catalogue's three tasks, the
//! Rust worker runs them and sends `mark_message_sent`, and `peer.py worker`
//! (a real Celery worker) runs that.
#![cfg(feature = "redis")]

#[path = "../celery.rs"]
#[allow(dead_code)]
mod celery;

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_runs_the_three_tasks_python_sends_and_python_runs_the_one_it_sends() {
    let server = RedisServer::start().expect("start redis-server");
    let url = server.url();
    let bus = eventbus::Bus::builder()
        .service("reviews")
        .connect(&url)
        .await
        .expect("connect");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(celery::serve(bus, async {
        let _ = stopped.await;
    }));

    let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("celery/peer.py");
    let sent = testkit::python()
        .arg(&peer)
        .args(["send", "42"])
        .env("EVENTBUS_URL", &url)
        .output()
        .expect("run peer.py send");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let sent = String::from_utf8_lossy(&sent.stdout).into_owned();
    for task in [
        "send_short_message(42)",
        "send_email_task(42)",
        "send_notification(42)",
    ] {
        assert!(sent.contains(&format!("sent {task}")), "{sent}");
    }

    // The Django side's worker runs what the Rust SMS worker sends back.
    let mut python = testkit::python()
        .arg(&peer)
        .arg("worker")
        .env("EVENTBUS_URL", &url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run peer.py worker");
    let stderr = python.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let err_tx = tx.clone();
    std::thread::spawn(move || {
        let tx = err_tx;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // Celery logs what a task prints (stdout redirected to its log, on stderr).
    let stdout = python.stdout.take().unwrap();
    let out_tx = tx.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = out_tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    let ran = loop {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if line.contains("python ran mark_message_sent(42)") {
                break true;
            }
            seen.push(line);
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
    };
    // Celery's warm shutdown (SIGTERM): it acknowledges the task it ran.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &python.id().to_string()])
        .status();
    let _ = python.wait();
    assert!(
        ran,
        "the Celery worker did not run mark_message_sent(42):\n{}",
        seen.join("\n")
    );

    let _ = stop.send(());
    worker.await.unwrap().expect("the example's worker");
    for key in ["sms_send_queue", "celery", "django_tasks"] {
        assert_eq!(server.cmd(&["LLEN", key]).unwrap(), "0", "{key}");
    }
    assert_eq!(server.cmd(&["HLEN", "unacked"]).unwrap(), "0");
}
