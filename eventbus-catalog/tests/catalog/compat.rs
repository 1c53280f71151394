//! The compatibility check: every breaking change is caught and named,
//! additive changes pass, from `compare`, `assert_compatible`,
//! `assert_up_to_date` and `docs --check`.
//!
//! Each module below is one version of the same wire types, so this binary's
//! global registry is deliberately inconsistent: every catalogue here is
//! built from an explicit `Registry::build`.

use eventbus::EventInfo;
use eventbus::registry::Registry;
use eventbus_catalog::{
    Catalog, ChangeKind, Compatibility, assert_compatible, assert_up_to_date, cli, compare,
};

use crate::support;

fn catalog(events: Vec<&'static EventInfo>) -> Catalog {
    Catalog::from_registry(&Registry::build(events, vec![], vec![]).unwrap(), "orders")
}

fn kinds(report: &Compatibility) -> Vec<(ChangeKind, &str, &str)> {
    report
        .changes
        .iter()
        .map(|c| (c.kind, c.event_type.as_str(), c.field.as_str()))
        .collect()
}

fn breaking(report: &Compatibility) -> Vec<(ChangeKind, &str, &str)> {
    report
        .breaking()
        .map(|c| (c.kind, c.event_type.as_str(), c.field.as_str()))
        .collect()
}

/// Version 1: what the committed catalogue describes.
mod v1 {
    use eventbus::Event;
    use serde::{Deserialize, Serialize};
    use uuid::Uuid;

    #[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum Status {
        Pending,
        Paid,
        Cancelled,
    }

    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum Payment {
        Card { last4: String },
        Invoice { number: u32 },
    }

    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct Customer {
        pub id: Uuid,
        pub email: String,
    }

    /// An order was placed.
    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
    #[event("order_placed", aliases = ["order_created"])]
    pub struct OrderPlaced {
        pub id: Uuid,
        pub amount: u32,
        pub status: Status,
        pub payment: Payment,
        pub customer: Customer,
        pub note: Option<String>,
        pub lines: Vec<Customer>,
    }

    /// An order was shipped.
    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
    #[event("order_shipped")]
    pub struct OrderShipped {
        pub id: Uuid,
    }

    /// Old, about to go.
    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
    #[event("order_legacy", deprecated = "nobody reads it")]
    pub struct OrderLegacy {
        pub id: Uuid,
    }

    /// Renamed later.
    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
    #[event("cart_abandoned")]
    pub struct CartAbandoned {
        pub id: Uuid,
    }

    pub fn all() -> Vec<&'static eventbus::EventInfo> {
        vec![
            OrderPlaced::info(),
            OrderShipped::info(),
            OrderLegacy::info(),
            CartAbandoned::info(),
        ]
    }
}

/// Version 2: every change is additive.
mod additive {
    use eventbus::Event;
    use serde::{Deserialize, Serialize};
    use uuid::Uuid;

    #[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum Status {
        /// Doc comments change how schemars writes an enum; it is still the same enum.
        Pending,
        Paid,
        Cancelled,
        Refunded,
    }

    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum Payment {
        Card {
            last4: String,
            brand: Option<String>,
        },
        Invoice {
            number: u32,
        },
        Voucher {
            code: String,
        },
    }

    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct Customer {
        pub id: Uuid,
        pub email: String,
        pub phone: Option<String>,
    }

    /// An order was placed (now with more detail).
    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
    #[event("order_placed", aliases = ["order_created", "order_new"])]
    pub struct OrderPlaced {
        pub id: Uuid,
        pub amount: u32,
        pub status: Status,
        pub payment: Payment,
        pub customer: Customer,
        pub note: Option<String>,
        pub lines: Vec<Customer>,
        pub coupon: Option<String>,
        #[serde(default)]
        pub gift: Option<bool>,
    }

    /// An order was shipped.
    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
    #[event("order_shipped", deprecated = "use order_dispatched", replaced_by = OrderDispatched)]
    pub struct OrderShipped {
        pub id: Uuid,
    }

    /// Its successor.
    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
    #[event("order_dispatched")]
    pub struct OrderDispatched {
        pub id: Uuid,
        pub carrier: Option<String>,
    }

    impl From<OrderShipped> for OrderDispatched {
        fn from(old: OrderShipped) -> Self {
            OrderDispatched {
                id: old.id,
                carrier: None,
            }
        }
    }

    /// The new name of `cart_abandoned`, which still decodes.
    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
    #[event("basket_abandoned", aliases = ["cart_abandoned"])]
    pub struct BasketAbandoned {
        pub id: Uuid,
    }

    pub fn all() -> Vec<&'static eventbus::EventInfo> {
        // `order_legacy` was deprecated in v1: removing it now is fine.
        vec![
            OrderPlaced::info(),
            OrderShipped::info(),
            OrderDispatched::info(),
            BasketAbandoned::info(),
        ]
    }
}

/// Version 2 with every kind of breaking change.
mod breaking {
    use eventbus::Event;
    use serde::{Deserialize, Serialize};
    use uuid::Uuid;

    #[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum Status {
        Pending,
        Paid,
    }

    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum Payment {
        Card { last4: u16 },
    }

    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct Customer {
        pub id: String,
    }

    /// An order was placed.
    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
    #[event("order_placed")]
    pub struct OrderPlaced {
        pub id: Uuid,
        pub amount: String,
        pub status: Status,
        pub payment: Payment,
        pub customer: Customer,
        pub note: String,
        pub lines: Vec<Customer>,
        pub currency: String,
    }

    pub fn all() -> Vec<&'static eventbus::EventInfo> {
        // `order_shipped` and `cart_abandoned` are gone without deprecation.
        vec![OrderPlaced::info()]
    }
}

#[test]
fn the_same_catalogue_is_compatible_with_itself() {
    let c = catalog(v1::all());
    let report = compare(&c, &c);
    assert!(report.changes.is_empty(), "{report}");
    assert!(report.is_compatible());
    assert_eq!(report.to_string(), "no breaking change\n");
}

#[test]
fn additive_changes_pass() {
    let report = compare(&catalog(v1::all()), &catalog(additive::all()));
    assert!(report.is_compatible(), "{report}");
    assert_eq!(
        kinds(&report),
        vec![
            (ChangeKind::EventAdded, "basket_abandoned", ""),
            (ChangeKind::EventRenamed, "cart_abandoned", ""),
            (ChangeKind::EventAdded, "order_dispatched", ""),
            (ChangeKind::DeprecatedEventRemoved, "order_legacy", ""),
            (ChangeKind::AliasAdded, "order_placed", ""),
            (ChangeKind::FieldAdded, "order_placed", "coupon"),
            (ChangeKind::FieldAdded, "order_placed", "customer.phone"),
            (ChangeKind::FieldAdded, "order_placed", "gift"),
            (ChangeKind::FieldAdded, "order_placed", "lines[].phone"),
            (ChangeKind::EnumVariantAdded, "order_placed", "payment"),
            (
                ChangeKind::FieldAdded,
                "order_placed",
                "payment(Card).Card.brand"
            ),
            (ChangeKind::EnumVariantAdded, "order_placed", "status"),
            (ChangeKind::EventDeprecated, "order_shipped", ""),
        ],
        "{report}"
    );
}

#[test]
fn every_breaking_change_is_listed() {
    let report = compare(&catalog(v1::all()), &catalog(breaking::all()));
    assert!(!report.is_compatible());
    assert_eq!(
        breaking(&report),
        vec![
            (ChangeKind::EventRemoved, "cart_abandoned", ""),
            (ChangeKind::AliasRemoved, "order_placed", ""),
            (ChangeKind::FieldRetyped, "order_placed", "amount"),
            (ChangeKind::RequiredFieldAdded, "order_placed", "currency"),
            (ChangeKind::FieldRemoved, "order_placed", "customer.email"),
            (ChangeKind::FieldRetyped, "order_placed", "customer.id"),
            (ChangeKind::FieldRemoved, "order_placed", "lines[].email"),
            (ChangeKind::FieldRetyped, "order_placed", "lines[].id"),
            (ChangeKind::FieldMadeRequired, "order_placed", "note"),
            (ChangeKind::NullRemoved, "order_placed", "note"),
            (ChangeKind::EnumVariantRemoved, "order_placed", "payment"),
            (
                ChangeKind::FieldRetyped,
                "order_placed",
                "payment(Card).Card.last4"
            ),
            (ChangeKind::EnumVariantRemoved, "order_placed", "status"),
            (ChangeKind::EventRemoved, "order_shipped", ""),
        ],
        "{report}"
    );
    let text = report.to_string();
    for line in [
        "14 breaking changes:",
        "`cart_abandoned`: event type removed without deprecation; deprecate it first",
        "`order_placed`: the old name `order_created` no longer decodes",
        "`order_placed`: `amount` changed type from `integer (uint32)` to `string`",
        "`order_placed`: new required field `currency`; old producers do not send it",
        "`order_placed`: field `customer.email` removed",
        "`order_placed`: `customer.id` changed type from `string (uuid)` to `string`",
        "`order_placed`: field `note` became required",
        "`order_placed`: `note` no longer accepts null",
        "`order_placed`: `payment`: variant `Invoice` removed",
        "`order_placed`: `status`: variant `cancelled` removed",
        "`order_placed`: `payment(Card).Card.last4` changed type from `string` to `integer (uint16)`",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

#[test]
fn making_a_field_optional_or_nullable_breaks_old_consumers() {
    mod before {
        use eventbus::Event;
        #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Event)]
        #[event("price_changed")]
        pub struct PriceChanged {
            pub cents: u64,
        }
    }
    mod after {
        use eventbus::Event;
        #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Event)]
        #[event("price_changed")]
        pub struct PriceChanged {
            pub cents: Option<u64>,
        }
    }
    use eventbus::Event as _;
    let report = compare(
        &catalog(vec![before::PriceChanged::info()]),
        &catalog(vec![after::PriceChanged::info()]),
    );
    assert_eq!(
        breaking(&report),
        vec![
            (ChangeKind::FieldMadeOptional, "price_changed", "cents"),
            (ChangeKind::NullAdded, "price_changed", "cents"),
        ],
        "{report}"
    );
}

#[test]
fn integer_enum_values_are_variants() {
    fn with_status(values: serde_json::Value) -> Catalog {
        let mut c = catalog(vec![]);
        let mut e = catalog(v1::all())
            .events
            .into_iter()
            .find(|e| e.type_name == "order_placed")
            .unwrap();
        e.schema = serde_json::json!({
            "type": "object",
            "properties": {"status": {"type": "integer", "enum": values}},
            "required": ["status"]
        });
        c.events.push(e);
        c
    }
    let report = compare(
        &with_status(serde_json::json!([1, 2])),
        &with_status(serde_json::json!([1])),
    );
    assert_eq!(
        breaking(&report),
        vec![(ChangeKind::EnumVariantRemoved, "order_placed", "status")],
        "{report}"
    );
    assert!(
        report.to_string().contains("variant `2` removed"),
        "{report}"
    );
    let report = compare(
        &with_status(serde_json::json!([1, 2])),
        &with_status(serde_json::json!([1, 2, 3])),
    );
    assert!(report.is_compatible(), "{report}");
}

#[test]
fn assert_compatible_panics_with_the_list() {
    let dir = support::TempDir::new("docs-compat");
    let committed = dir.path().join("catalog.json");
    std::fs::write(&committed, catalog(v1::all()).to_json()).unwrap();

    assert_compatible(&committed, &catalog(additive::all()));

    let panic = std::panic::catch_unwind(|| {
        assert_compatible(&committed, &catalog(breaking::all()));
    })
    .expect_err("a breaking change fails the assertion");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("14 breaking changes"), "{message}");
    assert!(
        message.contains("field `customer.email` removed"),
        "{message}"
    );
    assert!(message.contains("docs --format json --output"), "{message}");

    let missing = std::panic::catch_unwind(|| {
        assert_compatible(dir.path().join("nope.json"), &catalog(v1::all()));
    })
    .expect_err("a missing catalogue fails");
    let message = missing
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("cannot read the catalogue"), "{message}");
}

#[test]
fn assert_up_to_date_refuses_a_breaking_change_and_names_the_fix() {
    let dir = support::TempDir::new("docs-fresh");
    let old = catalog(v1::all());
    let code = cli(
        &old,
        ["--out-dir", dir.path().to_str().unwrap()],
        &mut std::io::sink(),
        &mut std::io::sink(),
    );
    assert_eq!(code, 0);
    assert_up_to_date(&old, dir.path());

    if std::env::var_os("EVENTBUS_BLESS").is_some() {
        return; // blessing rewrites instead of failing
    }
    let stale = std::panic::catch_unwind(|| {
        assert_up_to_date(&catalog(additive::all()), dir.path());
    })
    .expect_err("a stale catalogue fails");
    let message = stale.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("is stale"), "{message}");
    assert!(message.contains("events.md: line"), "{message}");
    assert!(
        message.contains("EVENTBUS_BLESS=1 cargo test -p eventbus-catalog --test catalog"),
        "{message}"
    );

    let broken = std::panic::catch_unwind(|| {
        assert_up_to_date(&catalog(breaking::all()), dir.path());
    })
    .expect_err("a breaking change fails");
    let message = broken.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("break compatibility"), "{message}");
    assert!(message.contains("EVENTBUS_BLESS=breaking"), "{message}");
}

#[test]
fn the_check_command_exits_1_on_a_breaking_change() {
    let dir = support::TempDir::new("docs-check");
    let committed = dir.path().join("catalog.json");
    std::fs::write(&committed, catalog(v1::all()).to_json()).unwrap();
    let check = |current: &Catalog| {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = cli(
            current,
            ["--check", committed.to_str().unwrap()],
            &mut out,
            &mut err,
        );
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    };
    let (code, out, _) = check(&catalog(additive::all()));
    assert_eq!(code, 0);
    assert!(out.contains("no breaking change"), "{out}");
    assert!(out.contains("compatible changes:"), "{out}");
    let (code, _, err) = check(&catalog(breaking::all()));
    assert_eq!(code, 1);
    assert!(err.contains("14 breaking changes:"), "{err}");
    let (code, _, err) = check_missing(&catalog(v1::all()));
    assert_eq!(code, 2);
    assert!(err.contains("cannot read the catalogue"), "{err}");

    fn check_missing(current: &Catalog) -> (i32, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = cli(
            current,
            ["--check", "/nonexistent/catalog.json"],
            &mut out,
            &mut err,
        );
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }
}
