//! django-pubsubpull's publish and pull over HTTP: a web request changes a
//! captured row, the actor comes from the request through `ActorLayer`,
//! and a client pulls the changes from the outbox's feed with
//! `GET /events?compact=subject` (every instance from the start, then new ones).
#![cfg(all(feature = "http", feature = "postgres"))]

use axum::extract::{Path, State};
use axum::http::StatusCode;
use eventbus::outbox::capture::{self, ActorLayer, Capture};
use serde_json::Value;

use crate::common::*;

async fn rename(
    State(pool): State<sqlx::PgPool>,
    Path((id, title)): Path<(i64, String)>,
) -> StatusCode {
    let mut tx = pool.begin().await.expect("begin");
    capture::set_actor_from_task(&mut *tx)
        .await
        .expect("the actor");
    sqlx::query("UPDATE review SET title = $1 WHERE id = $2")
        .bind(title)
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("update");
    capture::commit(tx).await.expect("commit");
    StatusCode::NO_CONTENT
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_request_s_actor_reaches_the_captured_change_and_the_pull_feed_serves_it() {
    let db = Db::postgres().await;
    let Db::Pg(pool, _) = &db else { unreachable!() };
    sqlx::query("CREATE TABLE review (id BIGINT PRIMARY KEY, title TEXT NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    Capture::table("review")
        .model("Review")
        .apply(pool)
        .await
        .expect("apply the capture");
    for id in 1..=3 {
        sqlx::query("INSERT INTO review (id, title) VALUES ($1, 'draft')")
            .bind(id)
            .execute(pool)
            .await
            .unwrap();
    }

    // The service: its own route behind the actor layer.
    let app = axum::Router::new()
        .route("/reviews/{id}/title/{title}", axum::routing::post(rename))
        .layer(ActorLayer::new(
            |req: &axum::http::Request<axum::body::Body>| {
                req.headers()
                    .get("x-user-id")
                    .and_then(|v| v.to_str().ok())
                    .map(|id| format!("user:{id}"))
            },
        ))
        .with_state(pool.clone());
    let service = serve(app).await;
    let client = reqwest::Client::new();
    for (id, title, user) in [(2, "second", "7"), (1, "first", "8"), (2, "final", "9")] {
        let r = client
            .post(format!("{service}/reviews/{id}/title/{title}"))
            .header("x-user-id", user)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }

    // The pull side: the outbox's feed behind eventbus-http.
    let bus = eventbus::Bus::builder()
        .service("pull")
        .without_registered()
        .connect("memory://")
        .await
        .unwrap();
    let feed = serve(
        eventbus::http::Http::new(&bus)
            .feed(eventbus::outbox::feed(pool))
            .router(),
    )
    .await;
    // A row is served once every transaction older than it ended, on the
    // whole server (other tests' transactions included): poll for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let page = loop {
        let page: Vec<Value> = client
            .get(format!("{feed}/events?compact=subject"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page.len() >= 3 || std::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let latest: Vec<(String, String, Option<String>)> = page
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["subject"].as_str().unwrap().to_owned(),
                e["actor"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        latest,
        vec![
            ("record_create".into(), "3".into(), None),
            ("record_change".into(), "1".into(), Some("user:8".into())),
            ("record_change".into(), "2".into(), Some("user:9".into())),
        ],
        "the latest event of each review, in commit order, with the request's actor"
    );
    let changed = &page[2]["data"];
    assert_eq!(changed["model_name"], "Review");
    assert_eq!(changed["changed"], serde_json::json!(["title"]));

    // Then follow: a long poll after the last cursor wakes on the next change.
    let cursor = page[2]["feedcursor"].as_str().unwrap().to_owned();
    let poll = tokio::spawn({
        let client = client.clone();
        let feed = feed.clone();
        async move {
            client
                .get(format!(
                    "{feed}/events?compact=subject&wait=30s&after={cursor}"
                ))
                .send()
                .await
                .unwrap()
                .json::<Vec<Value>>()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    client
        .post(format!("{service}/reviews/3/title/published"))
        .send()
        .await
        .unwrap();
    let next = poll.await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0]["subject"], "3");
    assert!(
        next[0].get("actor").is_none(),
        "no user, no actor: {}",
        next[0]
    );
}
