//! What a bus says when it starts: the transport it runs on, and a hint when
//! it has nothing to run (handlers in a crate the binary never names).

use std::sync::Arc;

use eventbus::{Bus, HandlerDef};
use parking_lot::Mutex;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `bus` until it is ready, stops it, and returns what it logged.
async fn start_and_stop(bus: Bus) -> String {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    running.shutdown().await.unwrap();
    String::from_utf8(buf.0.lock().clone()).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn a_bus_with_nothing_to_run_says_how_to_fix_it() {
    let bus = Bus::builder()
        .service("startup-empty")
        .without_registered()
        .build()
        .await
        .unwrap();
    let out = start_and_stop(bus).await;
    assert!(out.contains("eventbus starting"), "{out}");
    assert!(
        out.contains("transport=\"memory\"") || out.contains("transport=memory"),
        "{out}"
    );
    assert!(
        out.contains("no handlers or schedules are registered"),
        "{out}"
    );
    assert!(out.contains("use my_handlers as _;"), "{out}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_bus_with_handlers_gives_no_hint() {
    let bus = Bus::builder()
        .service("startup-one")
        .without_registered()
        .handler(HandlerDef::new("noop", |_: eventbus::CloudEvent| async {}))
        .build()
        .await
        .unwrap();
    let out = start_and_stop(bus).await;
    assert!(out.contains("groups=1"), "{out}");
    assert!(!out.contains("no handlers"), "{out}");
}
