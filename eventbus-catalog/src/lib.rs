//! The event catalogue, generated from the code.
//!
//! The [`Registry`](crate::registry::Registry) knows every event type,
//! handler, consumer group, schedule, alias and deprecation in a binary. A
//! [`Catalog`] is that knowledge as plain sorted data, with the JSON Schema
//! of each event's `data` (from `schemars`; doc comments on the struct and
//! its fields become descriptions) and an example payload valid against it.
//! It renders as:
//!
//! - **Markdown** for people ([`Catalog::to_markdown`]): one section per
//!   event type with its description, deprecation ("Deprecated, use X
//!   instead."), old names, CloudEvents attributes, fields, example, schema,
//!   consumers and schedules;
//! - **AsyncAPI 3.0**, JSON or YAML ([`Catalog::to_asyncapi_json`],
//!   [`Catalog::to_asyncapi_yaml`]), for AsyncAPI tooling;
//! - **JSON** ([`Catalog::to_json`]), read back by the compatibility check
//!   ([`compare`], [`assert_compatible`], `docs --check`);
//! - **JSON Schema** of each event's data ([`Catalog::to_json_schemas`]),
//!   for services in other languages that validate what they receive.
//!
//! A service prints its catalogue without extra code through
//! [`main_if_requested`]: `my-service docs --format asyncapi`. A test keeps
//! a committed copy fresh and compatible with [`assert_up_to_date`].
//!
//! Example payloads: a schema's own example wins, so give one where the
//! generated placeholder says too little:
//!
//! ```
//! /// Triggered when a record is created.
//! #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, eventbus::Event)]
//! #[event("record_create")]
//! struct RecordCreate {
//!     /// The record.
//!     id: uuid::Uuid,
//!     /// Its model.
//!     #[schemars(example = &"Review")]
//!     model_name: String,
//! }
//! # use eventbus::Event as _;
//! let registry = eventbus::registry::Registry::build(vec![RecordCreate::info()], vec![], vec![])?;
//! let catalog = eventbus::docs::Catalog::from_registry(&registry, "reviews");
//! assert_eq!(catalog.events[0].example["model_name"], "Review");
//! # Ok::<(), eventbus::Error>(())
//! ```

mod asyncapi;
mod catalog;
mod cli;
mod compat;
mod markdown;
mod schema;
mod yaml;

pub use catalog::{Catalog, EventDoc, FORMAT, HandlerDoc, ScheduleDoc};
pub use cli::{Format, assert_up_to_date, cli, main_if_requested};
pub use compat::{Change, ChangeKind, Compatibility, assert_compatible, compare};

impl Catalog {
    /// The catalogue for people, as Markdown.
    pub fn to_markdown(&self) -> String {
        markdown::render(self)
    }

    /// The AsyncAPI 3.0 document.
    pub fn to_asyncapi(&self) -> serde_json::Value {
        asyncapi::document(self)
    }

    /// The AsyncAPI 3.0 document as pretty JSON.
    pub fn to_asyncapi_json(&self) -> String {
        schema::pretty(&self.to_asyncapi())
    }

    /// The AsyncAPI 3.0 document as YAML.
    pub fn to_asyncapi_yaml(&self) -> String {
        yaml::to_yaml(&self.to_asyncapi())
    }

    /// The JSON Schema of each event's `data`, by type: one standalone
    /// JSON Schema (2020-12) per event, for consumers that validate payloads.
    pub fn to_json_schemas(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .events
            .iter()
            .map(|e| (e.type_name.clone(), e.schema.clone()))
            .collect();
        schema::pretty(&serde_json::Value::Object(map))
    }

    /// The catalogue in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Markdown => self.to_markdown(),
            Format::AsyncApiJson => self.to_asyncapi_json(),
            Format::AsyncApiYaml => self.to_asyncapi_yaml(),
            Format::Json => self.to_json(),
            Format::JsonSchema => self.to_json_schemas(),
        }
    }
}
