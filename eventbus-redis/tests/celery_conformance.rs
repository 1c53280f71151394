//! The transport contract (`eventbus::testing::conformance`) on the Celery
//! transport: kombu's queues on a private redis-server, every probe type of
//! the suite declared as a Celery task on a queue of its own.
//!
//! What Celery semantics rule out is off in its [`Features`]: a task runs
//! once, on one handler (no second group of one type, no global handler).

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use eventbus::testing::conformance::{Connect, Features};
use eventbus::transport::Transport;
use eventbus_redis::celery::{CeleryOptions, CeleryTransport, TaskSpec};
use testkit::RedisServer;

const PROBES: &[&str] = &[
    "groups",
    "compete",
    "lost",
    "early",
    "backoff",
    "no_block",
    "panics",
    "poison",
    "replay",
    "malformed",
    "delayed",
    "tick",
    "drain",
    "order",
    "limit",
    "global",
    "broadcast",
];

fn celery() -> impl Connect {
    static SERVER: Mutex<Weak<RedisServer>> = Mutex::new(Weak::new());
    let server = {
        let mut slot = SERVER.lock().unwrap_or_else(|e| e.into_inner());
        match slot.upgrade() {
            Some(s) => s,
            None => {
                let s = Arc::new(RedisServer::start().expect("start redis-server"));
                *slot = Arc::downgrade(&s);
                s
            }
        }
    };
    let url = server.url();
    move || {
        let _running = &server;
        let url = url.clone();
        async move {
            let schema = serde_json::json!({"type": "object"});
            let tasks = PROBES
                .iter()
                .map(|p| {
                    let name = format!("eventbus.conformance.{p}");
                    TaskSpec::new(name.clone(), name, &schema)
                })
                .collect();
            let options = CeleryOptions {
                // A lost subscriber's task comes back after this.
                visibility_timeout: Duration::from_secs(5),
                block: Duration::from_millis(200),
                ..CeleryOptions::default()
            };
            let t = CeleryTransport::connect(&url, tasks, options).await?;
            Ok(Arc::new(t) as Arc<dyn Transport>)
        }
    }
}

fn features() -> Features {
    Features::task_queue()
}

mod celery_queues {
    use super::*;
    eventbus::conformance_tests!(features(), celery());
}
