//! `cargo run --example http`: the README's curl lines against the example's
//! own [`serve`](http::serve), on the memory transport, with a webhook
//! subscription to a local receiver.

#[path = "../http.rs"]
#[allow(dead_code)]
mod http;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;

/// What the webhook receiver got: `(method, headers, body)`.
type Got = Arc<Mutex<Vec<(Method, HeaderMap, Bytes)>>>;

/// A local webhook receiver that answers the OPTIONS handshake and takes
/// every delivery.
async fn receiver() -> (String, Got) {
    let got: Got = Arc::default();
    let app = axum::Router::new().fallback({
        let got = got.clone();
        move |method: Method, headers: HeaderMap, body: Bytes| async move {
            let handshake = method == Method::OPTIONS;
            got.lock().unwrap().push((method, headers, body));
            if handshake {
                (StatusCode::OK, [("webhook-allowed-origin", "*")]).into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_example_ingests_and_serves_the_feed_until_shut_down() {
    let bus = eventbus::Bus::builder()
        .service("reviews")
        .connect("memory://")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // What EVENTBUS_WEBHOOK_ALLOW=127.0.0.0/8 gives `main`: loopback sinks.
    let sinks = eventbus::http::guard::SinkPolicy::new()
        .allow("127.0.0.0/8")
        .unwrap();
    let server = tokio::spawn(http::serve(bus, listener, sinks, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();

    // curl -i -X POST localhost:8080/events -H 'content-type: application/cloudevents+json' -d '{...}'
    let structured = r#"{"specversion":"1.0","id":"e-1","source":"/curl","type":"review_created","datacontenttype":"application/json","data":{"id":"9f1b7f0e-3c3a-4c0f-9d7e-0b3f5d1e2a61"}}"#;
    let r = client
        .post(format!("{base}/events"))
        .header("content-type", "application/cloudevents+json")
        .body(structured)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // curl -i -X POST localhost:8080/events -H 'ce-specversion: 1.0' -H 'ce-id: e-2' ...
    let r = client
        .post(format!("{base}/events"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "e-2")
        .header("ce-source", "/curl")
        .header("ce-type", "review_created")
        .header("content-type", "application/json")
        .body(r#"{"id":"0b7e2d55-8f43-4a51-a3f7-6f2b8c1d9e40"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // A bad event: 400 with the reason.
    let r = client
        .post(format!("{base}/events"))
        .header("content-type", "application/cloudevents+json")
        .body(r#"{"specversion":"1.0","id":"e-3","type":"review_created"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("source"),
        "{problem}"
    );

    // curl 'localhost:8080/events?types=review_created'
    let r = client
        .get(format!("{base}/events?types=review_created"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cursor = r.headers()["feed-cursor"].to_str().unwrap().to_owned();
    let page: Vec<serde_json::Value> = r.json().await.unwrap();
    let ids: Vec<&str> = page.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["e-1", "e-2"]);
    assert_eq!(page[1]["feedcursor"], cursor.as_str());

    // curl -N 'localhost:8080/events/stream?types=review_created' (with Last-Event-ID to resume)
    let mut sse = client
        .get(format!("{base}/events/stream?types=review_created"))
        .header("Last-Event-ID", page[0]["feedcursor"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let chunk = tokio::time::timeout(Duration::from_secs(30), sse.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&chunk);
    assert!(text.contains(&format!("id: {cursor}")), "{text}");
    assert!(text.contains(r#""id":"e-2""#), "{text}");
    drop(sse);

    // Webhooks: curl -i localhost:8080/subscriptions -H 'content-type: application/json' \
    //   -d '{"sink":"http://127.0.0.1:9000/hook","types":["review_created"]}'
    let (sink, got) = receiver().await;
    let r = client
        .post(format!("{base}/subscriptions"))
        .json(&serde_json::json!({"sink": sink, "types": ["review_created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let sub: serde_json::Value = r.json().await.unwrap();
    let id = sub["id"].as_str().unwrap().to_owned();
    let secret: eventbus::http::signature::Secret =
        sub["secret"].as_str().unwrap().parse().unwrap();
    let r = client
        .post(format!("{base}/events"))
        .header("content-type", "application/cloudevents+json")
        .body(structured.replace("e-1", "e-4"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (headers, body) = loop {
        let post = got
            .lock()
            .unwrap()
            .iter()
            .find(|(m, _, _)| *m == Method::POST)
            .map(|(_, h, b)| (h.clone(), b.clone()));
        if let Some(p) = post {
            break p;
        }
        assert!(Instant::now() < deadline, "no delivery to the receiver");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(headers["webhook-id"], "e-4");
    eventbus::http::verify(&headers, &body, &secret).expect("a signed delivery");
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["id"], "e-4");
    // curl -i localhost:8080/subscriptions/<id>/attempts
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempts: serde_json::Value = client
            .get(format!("{base}/subscriptions/{id}/attempts"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if attempts[0]["outcome"] == "delivered" {
            assert_eq!(attempts[0]["status"], 204, "{attempts}");
            break;
        }
        assert!(Instant::now() < deadline, "no attempt recorded: {attempts}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        got.lock().unwrap().len(),
        2,
        "the handshake and one delivery"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the example stops on its shutdown signal")
        .unwrap()
        .unwrap();
}
