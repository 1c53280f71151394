//! The event catalogue: one test binary, one module per topic.
//!
//! The AsyncAPI tests run the official parser (`node scripts/asyncapi/validate.mjs`,
//! which needs `npm ci --prefix scripts/asyncapi` once; `scripts/test.sh` runs it).

mod asyncapi;
mod compat;
mod markdown;
mod support;

/// This binary's global registry holds every module's registrations, among
/// them several versions of the same types: `Catalog::global` (and so the
/// `docs` subcommand) refuses it and names the conflicts.
#[test]
fn global_catalogue_of_an_inconsistent_binary_names_the_conflicts() {
    let err = eventbus_catalog::Catalog::global("orders").unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("event type `order_placed` is defined twice: by `catalog::compat::"),
        "{message}"
    );
}
