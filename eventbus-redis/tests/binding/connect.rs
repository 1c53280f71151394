//! Connecting: actionable errors, passwords never shown.

use std::net::TcpListener;

use eventbus_redis::{Client, RedisConfig};
use testkit::{RedisOptions, RedisServer};

fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn unreachable_server_is_one_actionable_sentence() {
    let port = closed_port();
    let url = format!("redis://user:hunter2@127.0.0.1:{port}/0");
    let err = Client::connect_url(&url).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("cannot connect to Redis at 127.0.0.1:{port}: ")),
        "{msg}"
    );
    assert!(
        msg.ends_with("; is redis-server running and is the URL right?"),
        "{msg}"
    );
    assert!(err.is_connection_error());
    eprintln!("{msg}");
    let all = format!("{msg} {err:?}");
    assert!(!all.contains("hunter2"), "{all}");
}

#[tokio::test]
async fn passwords_work_and_wrong_ones_are_reported_without_leaking() {
    let server = RedisServer::start_with(RedisOptions {
        password: Some("s3cret-pw".into()),
        ..Default::default()
    })
    .unwrap();
    let client = Client::connect_url(&server.url()).await.unwrap();
    client.ping().await.unwrap();
    let dbg = format!("{client:?} {}", client.config());
    assert!(!dbg.contains("s3cret-pw"), "{dbg}");
    assert!(dbg.contains("***"));

    let wrong = format!("redis://:wrong-pw@127.0.0.1:{}/0", server.port());
    let err = Client::connect_url(&wrong).await.unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(
        msg.contains("cannot connect to Redis at 127.0.0.1:"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-pw"), "{msg}");
}

#[tokio::test]
async fn bad_url_errors_do_not_leak_the_password() {
    let err = RedisConfig::from_url("redis://u:hunter2@h:6379/0?mode=nope").unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(msg.contains("redis://u:***@h:6379/0?mode=nope"), "{msg}");
}
