//! The AsyncAPI 3.0 document: its shape, and its validity according to the
//! official AsyncAPI parser (`node scripts/asyncapi/validate.mjs`, which
//! needs `npm ci --prefix scripts/asyncapi` once).

use std::collections::{BTreeMap, HashMap};

use eventbus::{CloudEvent, Context, Event, handler, schedule};
use eventbus_catalog::{Catalog, Format};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::support;

mod billing {
    /// The customer, as billing knows them.
    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    pub struct Customer {
        /// Billing account.
        pub account: String,
    }
}

mod shipping {
    /// The customer, as shipping knows them: same name, other shape.
    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    pub struct Customer {
        /// Where to ship.
        pub address: String,
    }
}

/// A category tree: recursive.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Category {
    /// Its name.
    pub name: String,
    /// Sub-categories.
    pub children: Vec<Category>,
}

/// How the order is paid.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payment {
    /// By card.
    Card {
        /// Last four digits.
        last4: String,
    },
    /// By invoice.
    Invoice {
        /// Days to pay.
        due_days: u8,
    },
}

/// An order was placed.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("shop.order.placed", source = "shop", aliases = ["order_placed"])]
pub struct OrderPlaced {
    /// The order.
    #[event(subject)]
    pub id: Uuid,
    /// Billing's view of the customer.
    pub billing: billing::Customer,
    /// Shipping's view of the customer.
    pub shipping: shipping::Customer,
    /// Payment.
    pub payment: Payment,
    /// Where it is listed.
    pub category: Option<Category>,
    /// Free-form attributes.
    pub attributes: HashMap<String, String>,
    /// Quantities by SKU.
    pub quantities: BTreeMap<String, u32>,
    /// When it was placed.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Total, in units.
    pub total: f64,
    /// Gift?
    pub gift: bool,
}

/// The old order event.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("order_created", deprecated = "use shop.order.placed")]
pub struct OrderCreated {
    /// The order.
    pub id: Uuid,
}

/// The old shipping event, converted for new handlers.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("order_sent", deprecated = "use order_shipped", replaced_by = OrderShipped)]
pub struct OrderSent {
    /// The order.
    pub id: Uuid,
}

/// An order left the warehouse.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("order_shipped")]
pub struct OrderShipped {
    /// The order.
    pub id: Uuid,
    /// The carrier, when known.
    pub carrier: Option<String>,
}

impl From<OrderSent> for OrderShipped {
    fn from(old: OrderSent) -> Self {
        OrderShipped {
            id: old.id,
            carrier: None,
        }
    }
}

/// Nightly report due.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("report_due")]
pub struct ReportDue {
    /// Tick.
    pub tick_ms: u64,
}

#[handler(group = "fulfilment", retries = 3, concurrency = 4)]
async fn on_order_placed(_event: OrderPlaced, _ctx: Context) {}

#[handler]
async fn on_order_shipped(_event: OrderShipped) {}

#[handler(all)]
async fn audit(_event: CloudEvent) {}

#[schedule(cron = "0 2 * * *")]
fn nightly_report() -> ReportDue {
    ReportDue { tick_ms: 0 }
}

fn catalog() -> Catalog {
    Catalog::from_registry(&support::registry_of(module_path!()), "shop")
}

/// Every `$ref` in `value`, with where it is.
fn refs(value: &Value, at: String, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    out.push((at.clone(), v.as_str().unwrap_or_default().to_owned()));
                } else {
                    refs(v, format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_ref_resolves_inside_the_document() {
    let doc = catalog().to_asyncapi();
    let mut all = Vec::new();
    refs(&doc, String::new(), &mut all);
    assert!(all.len() > 20, "{all:?}");
    for (at, r) in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {r} at {at}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{r} at {at} resolves to nothing"
        );
    }
}

#[test]
fn channels_messages_and_operations() {
    let doc = catalog().to_asyncapi();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["title"], "shop events");
    assert_eq!(doc["info"]["version"], "0.0.0");
    let channels = doc["channels"].as_object().unwrap();
    assert_eq!(
        channels.keys().collect::<Vec<_>>(),
        [
            "order_created",
            "order_sent",
            "order_shipped",
            "report_due",
            "shop.order.placed"
        ]
    );
    assert_eq!(
        channels["shop.order.placed"]["address"],
        "shop.order.placed"
    );

    let placed = &doc["components"]["messages"]["shop.order.placed"];
    assert_eq!(placed["name"], "shop.order.placed");
    assert_eq!(placed["summary"], "An order was placed.");
    assert_eq!(
        placed["x-eventbus-aliases"],
        serde_json::json!(["order_placed"])
    );
    let headers = &placed["headers"];
    assert_eq!(
        headers["required"],
        serde_json::json!(["specversion", "id", "type", "source", "subject"])
    );
    assert_eq!(
        headers["properties"]["type"]["enum"],
        serde_json::json!(["shop.order.placed", "order_placed"])
    );
    assert_eq!(headers["properties"]["specversion"]["const"], "1.0");
    let example = &placed["examples"][0];
    assert_eq!(example["headers"]["source"], "/shop");
    assert_eq!(example["headers"]["subject"], example["payload"]["id"]);

    // Same-named types from two modules both survive, under two names.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let payload = &schemas["OrderPlaced"];
    let billing = payload["properties"]["billing"]["$ref"].as_str().unwrap();
    let shipping = payload["properties"]["shipping"]["$ref"].as_str().unwrap();
    assert_ne!(billing, shipping);
    assert!(payload.get("$schema").is_none());

    // Deprecations: the message, its payload schema, and the replacement.
    let sent = &doc["components"]["messages"]["order_sent"];
    assert_eq!(sent["deprecated"], true);
    assert_eq!(sent["x-eventbus-replaced-by"], "order_shipped");
    assert_eq!(schemas["OrderSent"]["deprecated"], true);
    assert_eq!(
        schemas["OrderSent"]["x-eventbus-replaced-by"],
        "order_shipped"
    );
    assert_eq!(
        doc["components"]["messages"]["order_created"]["deprecated"],
        true
    );
    assert!(
        doc["components"]["messages"]["order_shipped"]
            .get("deprecated")
            .is_none()
    );

    let ops = doc["operations"].as_object().unwrap();
    assert_eq!(
        ops.keys().collect::<Vec<_>>(),
        [
            "fulfilment",
            "publish.report_due",
            "publish.shop.order.placed",
            "shop.on_order_shipped",
            "shop.on_order_shipped.order_sent",
        ]
    );
    let fulfilment = &ops["fulfilment"];
    assert_eq!(fulfilment["action"], "receive");
    assert_eq!(
        fulfilment["channel"]["$ref"],
        "#/channels/shop.order.placed"
    );
    assert_eq!(fulfilment["x-eventbus-retries"], 3);
    assert_eq!(fulfilment["x-eventbus-concurrency"], 4);
    assert_eq!(
        fulfilment["x-eventbus-also-receives"],
        serde_json::json!(["order_placed"])
    );
    assert_eq!(
        ops["shop.on_order_shipped.order_sent"]["x-eventbus-converted-to"],
        "order_shipped"
    );
    assert_eq!(ops["publish.report_due"]["action"], "send");
    assert_eq!(
        ops["publish.report_due"]["x-eventbus-schedules"][0]["cron"],
        "0 2 * * *"
    );
    assert_eq!(doc["x-eventbus-global-handlers"][0]["group"], "shop.audit");
}

#[test]
fn yaml_and_json_say_the_same() {
    let c = catalog();
    let yaml = c.to_asyncapi_yaml();
    assert!(yaml.starts_with("asyncapi: \"3.0.0\"\n"), "{yaml}");
    assert!(
        yaml.contains("\n        $ref: \"#/components/messages/order_created\"\n"),
        "{yaml}"
    );
    assert_eq!(c.to_asyncapi_json(), c.render(Format::AsyncApiJson));
    assert_eq!(c.to_asyncapi_yaml(), c.to_asyncapi_yaml());
}

#[test]
fn the_document_validates_against_the_official_parser() {
    let c = catalog();
    let dir = support::TempDir::new("docs-asyncapi");
    let json = dir.path().join("asyncapi.json");
    let yaml = dir.path().join("asyncapi.yaml");
    std::fs::write(&json, c.to_asyncapi_json()).unwrap();
    std::fs::write(&yaml, c.to_asyncapi_yaml()).unwrap();
    support::validate_asyncapi(&[&json, &yaml]);
    support::assert_yaml_equals_json(&yaml, &json);
}

#[test]
fn the_validator_rejects_an_invalid_document() {
    let mut doc = catalog().to_asyncapi();
    doc["operations"]["fulfilment"]["action"] = "publish".into();
    doc["components"]["messages"]["order_shipped"]["examples"][0]["payload"]["id"] = 7.into();
    let dir = support::TempDir::new("docs-asyncapi-bad");
    let path = dir.path().join("asyncapi.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let failure = std::panic::catch_unwind(|| support::validate_asyncapi(&[&path]))
        .expect_err("the document is invalid");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("operations.fulfilment.action"),
        "{message}"
    );
    assert!(
        message
            .contains("components.messages.order_shipped.examples[0].payload/id: must be string"),
        "{message}"
    );
}
