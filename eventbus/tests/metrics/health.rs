//! `/healthz`, `/readyz` and `/metrics` over real HTTP.

use std::time::Duration;

use eventbus::transport::memory::MemoryTransport;
use serde_json::Value;

use crate::support::workload_builder;

async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn get_json(url: &str) -> (u16, Value) {
    let (status, body) = get(url).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

#[tokio::test]
async fn readyz_is_503_until_every_subscription_is_live_on_the_standalone_listener() {
    let bus = workload_builder()
        .transport(MemoryTransport::new())
        .build()
        .await
        .unwrap();
    let (listener, url) = listen().await;
    let server = tokio::spawn(eventbus::health::serve(bus.clone(), listener));

    assert_eq!(get_json(&format!("{url}/healthz")).await.0, 200);
    let (status, body) = get_json(&format!("{url}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["subscriptions"], "starting");
    assert_eq!(body["checks"]["transport"], "ok");
    assert_eq!(body["checks"]["outbox"], "ok");

    let mut running = bus.spawn();
    running.ready().await.unwrap();
    let (status, body) = get_json(&format!("{url}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);

    // The listener stops with the bus.
    running.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the health listener stops at shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn healthz_is_503_once_the_run_ended() {
    let bus = workload_builder()
        .transport(MemoryTransport::new())
        .build()
        .await
        .unwrap();
    let (listener, url) = listen().await;
    let router = eventbus::health::router(&bus);
    tokio::spawn(async move { axum::serve(listener, router).await });
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    assert_eq!(get_json(&format!("{url}/healthz")).await.0, 200);
    running.shutdown().await.unwrap();
    let (status, body) = get_json(&format!("{url}/healthz")).await;
    assert_eq!(
        (status, &body["alive"]),
        (503, &Value::Bool(false)),
        "{body}"
    );
    let (status, body) = get_json(&format!("{url}/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["subscriptions"], "stopped");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn readyz_is_503_while_the_redis_server_is_down() {
    let mut server = testkit::RedisServer::start()
        .expect("start redis-server (apt-get install -y redis-server)");
    let bus = workload_builder().connect(&server.url()).await.unwrap();
    let (listener, url) = listen().await;
    let router = eventbus::health::Health::new(&bus)
        .ping_timeout(Duration::from_millis(300))
        .router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    let (status, body) = get_json(&format!("{url}/readyz")).await;
    assert_eq!(status, 200, "{body}");

    server.stop();
    let (status, body) = get_json(&format!("{url}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_ne!(body["checks"]["transport"], "ok");
    assert_eq!(body["checks"]["subscriptions"], "ok");
    assert_eq!(
        get_json(&format!("{url}/healthz")).await.0,
        200,
        "still alive"
    );

    server.start_again().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get_json(&format!("{url}/readyz")).await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready again: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.shutdown().await.unwrap();
}

#[cfg(feature = "prometheus")]
#[test]
fn metrics_serves_the_prometheus_text_of_a_known_workload() {
    use crate::support::{eventually, publish_workload};
    use eventbus::metrics::prometheus;

    let recorder = prometheus::builder().build_recorder();
    prometheus::set_handle(recorder.handle());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let memory = MemoryTransport::new();
            let bus = workload_builder()
                .transport(memory.clone())
                .build()
                .await
                .unwrap();
            let (listener, url) = listen().await;
            tokio::spawn(eventbus::health::serve(bus.clone(), listener));
            let mut running = bus.spawn();
            running.ready().await.unwrap();
            publish_workload(&bus).await;
            let m = memory.clone();
            eventually("the workload settles", move || m.is_idle()).await;
            let (status, text) = get(&format!("{url}/metrics")).await;
            assert_eq!(status, 200);
            running.shutdown().await.unwrap();
            text
        })
    });
    let value = |prefix: &str, labels: &[&str]| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
            .unwrap_or_else(|| panic!("no {prefix} {labels:?} in:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let job = r#"type="metrics.job""#;
    let group = r#"group="svc.work""#;
    assert_eq!(
        value(
            "messaging_client_sent_messages",
            &[job, r#"transport="memory""#]
        ),
        10.0
    );
    assert_eq!(
        value("messaging_client_consumed_messages", &[job, group]),
        12.0
    );
    assert_eq!(value("eventbus_handler_retries", &[job, group]), 2.0);
    assert_eq!(value("eventbus_dead_lettered_messages", &[job, group]), 1.0);
    assert_eq!(
        value(
            "messaging_process_duration_count",
            &[job, group, r#"outcome="ok""#]
        ),
        9.0
    );
    assert_eq!(
        value(
            "messaging_process_duration_count",
            &[job, group, r#"outcome="error""#]
        ),
        3.0
    );
    assert_eq!(
        value(
            "messaging_process_duration_bucket",
            &[job, r#"outcome="error""#, r#"le="+Inf""#]
        ),
        3.0
    );
    assert!(
        text.contains("# TYPE messaging_process_duration histogram"),
        "{text}"
    );

    // The global recorder: once per process.
    let global = prometheus::install().expect("no global recorder yet");
    let again = prometheus::install().expect_err("a second global recorder");
    assert!(
        again.to_string().contains("another metrics recorder"),
        "{again}"
    );
    metrics::counter!(eventbus::metrics::RETRIES.name, "group" => "global.check").increment(1);
    assert!(global.render().contains(r#"group="global.check""#));
}

#[tokio::test]
async fn the_cloudevents_router_of_a_bus_serves_healthz_and_readyz() {
    let bus = workload_builder()
        .transport(MemoryTransport::new())
        .build()
        .await
        .unwrap();
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    let (listener, url) = listen().await;
    let router = eventbus::http::router(&bus);
    tokio::spawn(async move { axum::serve(listener, router).await });
    assert_eq!(get(&format!("{url}/healthz")).await.0, 200);
    let (status, body) = get_json(&format!("{url}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    // The CloudEvents endpoints are still there.
    assert_ne!(get(&format!("{url}/events")).await.0, 404);
    running.shutdown().await.unwrap();
}
