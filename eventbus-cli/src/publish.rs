//! `eventbus publish <type> <json|@file>`: one CloudEvent, written to the
//! transport as a service's `publish` would (structured JSON, checked by the
//! same validator the workers use before it is sent).

use std::borrow::Cow;
use std::time::SystemTime;

use clap::Args;
use eventbus::transport::Outgoing;
use serde_json::{Value, json};

/// Options of `publish`.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The transport's URL (`redis://host:6379/0`); as the library reads `EVENTBUS_URL`.
    #[arg(long, env = "EVENTBUS_URL", value_parser = crate::non_empty)]
    pub(crate) transport_url: String,
    /// The CloudEvents type.
    event_type: String,
    /// The data: JSON, or `@path` to read it from a file (`@-`: stdin).
    data: String,
    /// The CloudEvents source.
    #[arg(long, default_value = "/eventbus-cli")]
    source: String,
    /// The CloudEvents subject.
    #[arg(long)]
    subject: Option<String>,
    /// The CloudEvents id (default: a new UUIDv7).
    #[arg(long)]
    id: Option<String>,
    /// Print `{"id": ..., "type": ...}`.
    #[arg(long)]
    json: bool,
}

/// Runs `eventbus publish`.
pub(crate) async fn run(args: &PublishArgs) -> Result<(), String> {
    let text = match args.data.strip_prefix('@') {
        Some("-") => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| format!("cannot read the data from stdin: {e}"))?;
            s
        }
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the data from {path}: {e}"))?,
        None => args.data.clone(),
    };
    let data: Value = serde_json::from_str(&text).map_err(|e| {
        format!("the data is not JSON ({e}); quote it for the shell: '{{\"id\": 1}}'")
    })?;
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| eventbus::codec::new_event_id(SystemTime::now()).to_string());
    let mut event = json!({
        "specversion": "1.0",
        "id": id,
        "source": args.source,
        "type": args.event_type,
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "datacontenttype": "application/json",
        "data": data,
    });
    if let Some(subject) = &args.subject {
        event["subject"] = json!(subject);
    }
    let payload = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
    eventbus::codec::decode_cloudevent(&payload)
        .map_err(|e| format!("not a valid CloudEvent: {e}"))?;
    let transport = eventbus::transport::connect(&args.transport_url)
        .await
        .map_err(|e| e.to_string())?;
    transport
        .publish(&[Outgoing {
            event_type: Cow::Owned(args.event_type.clone()),
            payload: payload.into(),
        }])
        .await
        .map_err(|e| format!("publishing failed: {e}"))?;
    if args.json {
        println!("{}", json!({"id": id, "type": args.event_type}));
    } else {
        println!("published {} {id}", args.event_type);
    }
    Ok(())
}
