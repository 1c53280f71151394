#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod asyncapi;
mod catalog;
mod cli;
mod compat;
mod markdown;
mod schema;
mod yaml;

pub use catalog::{Catalog, EventDoc, FORMAT, HandlerDoc, ScheduleDoc, TaskDoc};
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
