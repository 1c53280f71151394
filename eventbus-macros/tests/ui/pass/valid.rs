//! Valid uses that once were easy to get wrong: they compile without a warning
//! under `deny(warnings)` and register what they should.
#![deny(warnings, unused_qualifications)]

extern crate eventbus as bus;

use bus::{CloudEvent, Context, Event, handler, schedule};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("new_thing")]
pub struct NewThing {
    pub id: u32,
}

/// A deprecated Rust type is still a legal event. (`schemars::JsonSchema`'s
/// derive warns on deprecated types, hence the impl by hand.)
#[deprecated = "use NewThing"]
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event("old_thing", deprecated = "use new_thing", replaced_by = NewThing, crate = ::bus)]
pub struct OldThing {
    pub id: u32,
}

#[allow(deprecated)]
impl schemars::JsonSchema for OldThing {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OldThing".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <NewThing as schemars::JsonSchema>::json_schema(generator)
    }
}

#[allow(deprecated)]
impl From<OldThing> for NewThing {
    fn from(old: OldThing) -> Self {
        NewThing { id: old.id }
    }
}

/// Raw identifiers keep their name without `r#`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("com.example.raw:v1", crate = "bus")]
pub struct r#Raw {
    #[event(subject)]
    pub r#type: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("tuple_thing")]
pub struct TupleThing(pub u8, #[event(subject)] pub u64);

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("unit_thing")]
pub struct UnitThing;

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("enum_thing", aliases = "old_enum_thing")]
pub enum EnumThing {
    A,
    B { id: u32 },
}

mod handlers {
    use super::*;

    #[handler]
    pub(crate) async fn unit_return(_thing: NewThing) {}

    #[handler(group = "things", retries = 0, concurrency = 1, crate = ::bus)]
    async fn with_context(thing: TupleThing, ctx: Context) -> Result<(), std::io::Error> {
        let _ = (thing.0, ctx);
        Ok(())
    }

    #[handler(all, broadcast)]
    async fn r#global(event: CloudEvent) -> anyhow::Result<()> {
        let _ = event;
        Ok(())
    }

    #[allow(deprecated)]
    #[handler]
    async fn old(thing: OldThing) {
        let _ = thing.id;
    }
}

#[schedule(every = "1h 30m")]
fn sync_schedule() -> Result<UnitThing, String> {
    Ok(UnitThing)
}

#[schedule(cron = "0 0 9 * * MON", name = "weekly.enum:thing")]
async fn async_schedule() -> EnumThing {
    EnumThing::A
}

fn main() {
    let registry = bus::registry::Registry::global().expect("a consistent registry");
    let names: Vec<_> = registry.handlers().map(|h| h.meta().name).collect();
    assert_eq!(names, ["global", "old", "unit_return", "with_context"]);
    let broadcast: Vec<_> = registry
        .handlers()
        .filter(|h| h.meta().broadcast)
        .map(|h| h.meta().name)
        .collect();
    assert_eq!(broadcast, ["global"]);
    let schedules: Vec<_> = registry.schedules().iter().map(|s| s.name).collect();
    assert_eq!(schedules, ["sync_schedule", "weekly.enum:thing"]);
    assert_eq!(r#Raw::info().subject_field, Some("type"));
    assert!(r#Raw::info().rust_path.ends_with("::Raw"));
    assert_eq!(TupleThing::info().subject_field, Some("1"));
    #[allow(deprecated)]
    let replaced = OldThing::info().replaced_by;
    assert_eq!(replaced, Some("new_thing"));
    assert_eq!(registry.event("old_enum_thing").map(|i| i.type_name), Some("enum_thing"));
}
