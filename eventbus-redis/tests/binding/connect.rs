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

/// A Redis URL that points at another service (here one that answers like
/// an HTTP server) is one sentence saying so, on one line.
#[tokio::test]
async fn a_port_where_another_service_listens_is_one_sentence() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 256];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let url = format!("redis://127.0.0.1:{port}/0");
    let msg = Client::connect_url(&url).await.unwrap_err().to_string();
    assert!(msg.contains("does not speak the Redis protocol"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg:?}");
    server.abort();
}
