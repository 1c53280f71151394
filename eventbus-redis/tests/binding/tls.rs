//! `rediss://` against a real `redis-server` serving TLS with certificates
//! of a private CA that the harness makes for it: Streams and pub/sub over
//! TLS, a CA given in the URL, mutual TLS, and the errors a person sees when
//! the certificates do not fit.
#![cfg(feature = "tls")]

use std::time::Duration;

use crate::common::*;
use eventbus_core::transport::Topics;
use eventbus_redis::{Client, Error, RedisConfig};
use serde_json::json;
use testkit::{RedisOptions, RedisServer};

fn tls_server(client_auth: bool) -> RedisServer {
    RedisServer::start_with(RedisOptions {
        tls: true,
        tls_client_auth: client_auth,
        ..Default::default()
    })
    .expect("start redis-server with TLS (needs redis-server built with TLS, and openssl)")
}

async fn connect(url: &str) -> Result<Client, Error> {
    Client::connect(RedisConfig::from_url(url).expect("a valid URL")).await
}

#[tokio::test]
async fn streams_and_pubsub_work_over_tls_with_the_ca_in_the_url() {
    let server = tls_server(false);
    let url = server.url();
    assert!(
        url.starts_with("rediss://") && url.contains("tls_ca="),
        "{url}"
    );

    let client = connect(&url).await.expect("connect over TLS");
    let consumer = client
        .consumer("g", Topics::Types(vec!["t".into()]), fast_opts())
        .await
        .unwrap();
    client
        .publish_one("t", &event("t", json!({"over": "tls"})))
        .await
        .unwrap();
    let got = read_n(&consumer, 1, Duration::from_secs(10)).await;
    assert_eq!(data(&got[0]), json!({"over": "tls"}));
    consumer.ack(&[got[0].id]).await.unwrap();
    // It really went over the TLS port: the plain port sees the same data.
    assert_eq!(server.cmd(&["XLEN", "{eventbus}:stream:t"]).unwrap(), "1");

    let pubsub = connect(&with(&url, "mode=pubsub")).await.unwrap();
    let sub = pubsub
        .consumer("g", Topics::Types(vec!["p".into()]), fast_opts())
        .await
        .unwrap();
    pubsub
        .publish_one("p", &event("p", json!(7)))
        .await
        .unwrap();
    let got = read_n(&sub, 1, Duration::from_secs(10)).await;
    assert_eq!(data(&got[0]), json!(7));
}

#[tokio::test]
async fn an_unknown_ca_is_refused_with_a_reason() {
    let server = tls_server(false);
    let url = format!("rediss://127.0.0.1:{}/0", server.tls_port().unwrap());
    let err = connect(&url)
        .await
        .expect_err("the system roots do not know the test CA");
    let text = err.to_string();
    assert!(matches!(err, Error::Connect { .. }), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let server = tls_server(true);
    let url = server.url();
    assert!(
        connect(&url).await.is_err(),
        "a server that requires client certificates refuses a client without one"
    );
    let (cert, key) = server.tls_client_cert();
    let url = with(
        &url,
        &format!("tls_cert={}&tls_key={}", cert.display(), key.display()),
    );
    let client = connect(&url)
        .await
        .expect("connect with a client certificate");
    client.ping().await.unwrap();
}

#[tokio::test]
async fn a_missing_certificate_file_is_named() {
    let err = connect("rediss://127.0.0.1:1/0?tls_ca=/nonexistent/ca.pem")
        .await
        .expect_err("no such file");
    let text = err.to_string();
    assert!(
        text.contains("cannot read the `tls_ca` file `/nonexistent/ca.pem`"),
        "{text}"
    );
}
