//! Procedural macros of [eventbus](https://docs.rs/eventbus): `#[derive(Event)]`,
//! `#[handler]` and `#[schedule]`.
//!
//! Do not depend on this crate directly: use the re-exports `eventbus::Event`,
//! `eventbus::handler` and `eventbus::schedule`. The generated code names only
//! `::eventbus::...` paths (or the path given with `crate = path`), so the
//! two crates are released together with the same version.
//!
//! Every macro reports all the mistakes it finds at once, each under the token
//! that caused it, and keeps the annotated item so that the rest of the crate
//! still type-checks.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use syn::{DeriveInput, parse_macro_input};

mod attr;
mod event;
mod handler;
mod schedule;

/// Implements `eventbus::Event` for a struct or an enum and registers it.
///
/// ```ignore
/// use eventbus::Event;
/// use serde::{Deserialize, Serialize};
///
/// /// Triggered when the review is approved by moderators.
/// #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
/// #[event("review_approved", source = "reviews", deprecated = "use moderate_action", replaced_by = ModerateAction)]
/// pub struct ReviewApproved {
///     #[event(subject)]
///     pub id: uuid::Uuid,
/// }
/// ```
///
/// The first item of `#[event(...)]` is the CloudEvents `type`, required. It
/// becomes part of Redis keys and channel names: an ASCII letter or digit,
/// then letters, digits, `.`, `_`, `:` or `-`, at most 200 characters.
/// Renaming the Rust type never changes it.
///
/// Options:
///
/// - `source = "reviews"`: the CloudEvents `source` (default: the bus's service name);
/// - `deprecated = "note"`: marks the type deprecated in the catalogue and logs a
///   warning once when it is published (it does not add `#[deprecated]`);
/// - `replaced_by = NewType`: the type that replaces this one; needs
///   `impl From<ThisType> for NewType`, so that handlers of `NewType` also get
///   messages of this type;
/// - `aliases = ["old_name"]`: old type names decoded as this type;
/// - `crate = path`: where the `eventbus` crate is, if it is renamed.
///
/// `#[event(subject)]` on one field (named or tuple) whose type implements
/// `Display` fills the CloudEvents `subject`; on an `Option<T>` field, `None`
/// means no subject. The doc comment becomes the
/// description in the catalogue. Generic types and unions are rejected.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    event::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers an `async fn` as an event handler.
///
/// ```ignore
/// use eventbus::{Context, handler};
///
/// #[handler]
/// async fn on_review_created(event: ReviewCreated, ctx: Context) -> anyhow::Result<()> {
///     Ok(())
/// }
///
/// #[handler(group = "sms_send_queue", retries = 5, concurrency = 8)]
/// async fn send_short_message(job: SendShortMessage) -> anyhow::Result<()> {
///     Ok(())
/// }
///
/// #[handler(all)]
/// async fn audit(event: eventbus::CloudEvent) {}
/// ```
///
/// The function is a module-level `async fn` taking an `Event` type (or
/// `eventbus::CloudEvent` with `all`), then optionally `eventbus::Context`, and
/// returning `()` or `Result<(), E>` with `E: Display`. A mistake is a compile
/// error under the argument or return type at fault.
///
/// Options:
///
/// - `group = "name"`: the consumer group (default `<service>.<fn name>`);
///   instances of a service compete within a group;
/// - `retries = N`: retries after the first attempt before the event goes to the
///   dead-letter queue (default 5);
/// - `concurrency = N`: events handled at once by one instance (at least 1);
/// - `all`: a global handler, given every event on the bus as a `CloudEvent`;
/// - `crate = path`: where the `eventbus` crate is, if it is renamed.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = TokenStream2::from(item);
    handler::expand(args.into(), item.clone())
        .unwrap_or_else(|e| with_item(item, e))
        .into()
}

/// Publishes the event a function returns on a recurring schedule.
///
/// ```ignore
/// use eventbus::schedule;
///
/// #[schedule(every = "1h")]
/// async fn hourly_digest() -> anyhow::Result<Digest> {
///     Ok(Digest::default())
/// }
///
/// #[schedule(cron = "0 9 * * MON", name = "weekly_report")]
/// fn weekly() -> Report {
///     Report::now()
/// }
///
/// #[schedule(cron = "0 9 * * *", tz = "Europe/Berlin")]
/// fn morning() -> Reminder {
///     Reminder::default()
/// }
/// ```
///
/// The function (async or not) takes no arguments and returns an `Event` or
/// `Result<E, Err>` with `Err: Display`. Each tick fires once across every
/// running instance.
///
/// Options (exactly one of `every` and `cron`):
///
/// - `every = "1h"`: a fixed interval in [humantime](https://docs.rs/humantime)
///   syntax (`"30s"`, `"5m"`, `"1h 30m"`), aligned to the Unix epoch;
/// - `cron = "0 9 * * MON"`: a cron expression, 5 fields or 6 with seconds
///   first, evaluated in UTC; checked at compile time;
/// - `tz = "Europe/Berlin"` (with `cron`): the IANA time zone the expression
///   is evaluated in, daylight-saving changes included; checked at compile time;
/// - `name = "name"`: the schedule's name, under which ticks are claimed
///   (default: the function name);
/// - `crate = path`: where the `eventbus` crate is, if it is renamed.
#[proc_macro_attribute]
pub fn schedule(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = TokenStream2::from(item);
    schedule::expand(args.into(), item.clone())
        .unwrap_or_else(|e| with_item(item, e))
        .into()
}

/// The user's item unchanged, followed by the errors: the rest of the crate
/// still sees the function, so only the real mistakes are reported.
fn with_item(mut item: TokenStream2, error: syn::Error) -> TokenStream2 {
    item.extend(error.into_compile_error());
    item
}
