//! Conversions the generated code of `#[handler]` and `#[schedule]` relies
//! on: a message into a handler's first argument, a schedule function's
//! return value into an event.
//!
//! They live next to [`Event`] because their blanket impls (every `E: Event`,
//! and `CloudEvent` / `Result<E, X>` besides) are only coherent in the crate
//! that defines `Event`. Applications never name them; `eventbus`
//! re-exports them.

use std::fmt;

use crate::CloudEvent;
use crate::codec::{Attributes, DecodeError};
use crate::event::{Event, Upcast};

/// What a handler is given besides its payload.
#[allow(missing_debug_implementations)]
pub struct Incoming<'a> {
    /// The message, as received.
    pub payload: &'a [u8],
    /// Old types whose `replaced_by` is this handler's type, with their conversion.
    pub upcasts: &'a [(&'static str, Upcast)],
}

/// The first argument of a handler: an [`Event`] type, or [`CloudEvent`] for `#[handler(all)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event type",
    label = "not an event",
    note = "derive `eventbus::Event` for `{Self}` with `#[event(\"type_name\")]`, or take `eventbus::CloudEvent` in a `#[handler(all)]`"
)]
pub trait HandlerArg: Send + Sized + 'static {
    #[doc(hidden)]
    const GLOBAL: bool;
    #[doc(hidden)]
    fn event_type() -> Option<&'static str>;
    #[doc(hidden)]
    fn decode<'a>(incoming: &Incoming<'a>) -> Result<(Attributes<'a>, Self), DecodeError>;
}

impl<E: Event> HandlerArg for E {
    const GLOBAL: bool = false;

    fn event_type() -> Option<&'static str> {
        Some(E::TYPE)
    }

    fn decode<'a>(incoming: &Incoming<'a>) -> Result<(Attributes<'a>, Self), DecodeError> {
        let aliases = E::info().aliases;
        let (attrs, value) = crate::codec::parse_typed::<E, _>(incoming.payload, |ty| {
            ty == E::TYPE || aliases.contains(&ty)
        })?;
        if let Some(value) = value {
            return Ok((attrs, value));
        }
        let ty = &*attrs.ty;
        let id = Some(&*attrs.id);
        if let Some((_, upcast)) = incoming.upcasts.iter().find(|(old, _)| *old == ty) {
            let raw = attrs.json_data()?;
            let boxed = upcast(raw).map_err(|e| e.with_event_id(id))?;
            let value = boxed.downcast::<E>().map(|b| *b).map_err(|_| {
                DecodeError::new(
                    Some(ty),
                    format!("`{ty}` is declared `replaced_by` `{}`, but its conversion produced another type", E::TYPE),
                )
                .with_event_id(id)
            })?;
            return Ok((attrs, value));
        }
        Err(DecodeError::new(
            Some(ty),
            format!(
                "a handler of `{}` received an event of type {}",
                E::TYPE,
                crate::escape::ticked(ty)
            ),
        )
        .with_event_id(id))
    }
}

impl HandlerArg for CloudEvent {
    const GLOBAL: bool = true;

    fn event_type() -> Option<&'static str> {
        None
    }

    /// The one validator's verdict (the same as a typed handler's, from
    /// one parse); the event is built from the checked attributes.
    fn decode<'a>(incoming: &Incoming<'a>) -> Result<(Attributes<'a>, Self), DecodeError> {
        let attrs = Attributes::parse(incoming.payload)?;
        let event = attrs.to_cloudevent()?;
        Ok((attrs, event))
    }
}

/// What a `#[schedule]` function may return: an event, or `Result<E, Err>`.
#[diagnostic::on_unimplemented(
    message = "a schedule must return an event (or `Result<E, Err>`), not `{Self}`",
    label = "not an event",
    note = "derive `eventbus::Event` for the returned type"
)]
pub trait ScheduleOutput: Send + 'static {
    /// The event type published.
    type Event: Event;
    #[doc(hidden)]
    fn into_event(self) -> std::result::Result<Self::Event, String>;
}

impl<E: Event> ScheduleOutput for E {
    type Event = E;
    fn into_event(self) -> std::result::Result<E, String> {
        Ok(self)
    }
}

impl<E: Event, X: fmt::Display + Send + 'static> ScheduleOutput for std::result::Result<E, X> {
    type Event = E;
    fn into_event(self) -> std::result::Result<E, String> {
        self.map_err(|e| format!("{e:#}"))
    }
}
