//! A bus's global handler (`Topics::All`) on Redis Streams sees the events
//! a Python service writes with redis-py straight into a stream of the
//! prefix that no eventbus publisher ever wrote (so `{eventbus}:types` does
//! not name it), next to the typed handler of that type.

use std::sync::Arc;

use crate::support::*;
use eventbus::{Bus, CloudEvent, Context, Event, HandlerDef};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("sso_user_changed")]
struct SsoUserChanged {
    data: serde_json::Value,
    action: String,
}

/// What a Python service does: `xadd` a structured CloudEvent (as the
/// Python `cloudevents` SDK's JSON format writes it) to the stream of its
/// type with redis-py, and nothing else.
const PY_XADD: &str = r#"
import json, sys, uuid, datetime
import redis
port, ty = int(sys.argv[1]), sys.argv[2]
r = redis.Redis(host="127.0.0.1", port=port)
event = {
    "specversion": "1.0",
    "id": str(uuid.uuid4()),
    "source": "/sso",
    "type": ty,
    "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    "datacontenttype": "application/json",
    "data": {"data": {"id": "7"}, "action": "update"},
}
r.xadd("{eventbus}:stream:" + ty, {"cloud_event": json.dumps(event)})
print(event["id"])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_handler_sees_what_a_python_service_xadds() {
    let server = server();
    let audited: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let typed: Arc<Mutex<Vec<String>>> = Arc::default();
    let audit = {
        let audited = audited.clone();
        HandlerDef::new("audit", move |e: CloudEvent| {
            let audited = audited.clone();
            async move {
                use eventbus::cloudevents::AttributesReader;
                audited.lock().push((e.ty().to_owned(), e.id().to_owned()));
            }
        })
    };
    let on_changed = {
        let typed = typed.clone();
        HandlerDef::new("on_changed", move |e: SsoUserChanged, ctx: Context| {
            let typed = typed.clone();
            async move {
                assert_eq!(e.action, "update");
                typed.lock().push(ctx.id().to_owned());
            }
        })
    };
    let bus = Bus::builder()
        .service("audit-svc")
        .without_registered()
        .handler(audit)
        .handler(on_changed)
        .connect(&server.url())
        .await
        .unwrap();
    let mut running = bus.spawn();
    running.ready().await.unwrap();

    let out = testkit::python()
        .args([
            "-c",
            PY_XADD,
            &server.port().to_string(),
            "sso_user_changed",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python could not XADD: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(
        server.cmd(&["SCARD", "{eventbus}:types"]).unwrap(),
        "0",
        "no eventbus publisher named the type"
    );

    wait_until("the global and the typed handler saw the event", || {
        !audited.lock().is_empty() && !typed.lock().is_empty()
    })
    .await;
    running.shutdown().await.unwrap();
    assert_eq!(
        audited.lock().clone(),
        [("sso_user_changed".to_owned(), id.clone())]
    );
    assert_eq!(typed.lock().clone(), [id]);
}
