//! `cargo run --example http`: the README's curl lines against the example's
//! own [`serve`](http::serve), on the memory transport.

#[path = "../http.rs"]
#[allow(dead_code)]
mod http;

use std::time::Duration;

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
    let server = tokio::spawn(http::serve(bus, listener, async {
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

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the example stops on its shutdown signal")
        .unwrap()
        .unwrap();
}
