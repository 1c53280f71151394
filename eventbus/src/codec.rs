//! Structured-mode CloudEvents JSON, written and read in one pass.
//!
//! A typed publish serializes the attributes from a small struct of borrowed
//! strings and `data` from the payload's own `Serialize`, straight into one
//! buffer. A typed handler reads the attributes as borrowed strings and
//! `data` as a [`RawValue`] that is decoded straight into its type. The
//! output is exactly what `cloudevents-sdk` writes, and everything it writes
//! is accepted (see the round-trip tests).

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::event::Event;

/// The CloudEvents spec version this crate writes and reads.
pub const SPEC_VERSION: &str = "1.0";
/// The content type of a structured-mode CloudEvent in JSON.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// Why a message could not be turned into an event.
///
/// Carries the CloudEvents type (when known) and, for data that does not fit
/// the Rust type, the path of the failing field (`data.rating`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    event_type: Option<String>,
    message: String,
}

impl DecodeError {
    pub(crate) fn new(event_type: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            event_type: event_type.map(str::to_owned),
            message: message.into(),
        }
    }

    /// The CloudEvents type of the message, when it could be read.
    pub fn event_type(&self) -> Option<&str> {
        self.event_type.as_deref()
    }
}

/// The attributes of a structured CloudEvent, borrowed from the message.
///
/// Unknown members (extensions, `dataschema`) are skipped without allocation.
#[derive(Debug, Deserialize)]
#[non_exhaustive]
pub struct Attributes<'a> {
    /// `specversion`; always `1.0` once [`Attributes::parse`] returned it.
    #[serde(borrow)]
    pub specversion: Cow<'a, str>,
    /// `id`.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// `type`.
    #[serde(rename = "type", borrow)]
    pub ty: Cow<'a, str>,
    /// `source`.
    #[serde(borrow)]
    pub source: Cow<'a, str>,
    /// `subject`.
    #[serde(borrow, default)]
    pub subject: Option<Cow<'a, str>>,
    /// `time` as RFC 3339 text.
    #[serde(borrow, default)]
    pub time: Option<Cow<'a, str>>,
    /// `datacontenttype`.
    #[serde(borrow, default)]
    pub datacontenttype: Option<Cow<'a, str>>,
    /// `data`, undecoded.
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
}

impl<'a> Attributes<'a> {
    /// Reads the attributes of a structured-mode CloudEvent.
    ///
    /// Fails on anything that is not JSON, not a CloudEvent (no `id`, `type`
    /// or `source`) or of a spec version other than 1.0.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let attrs: Attributes<'a> = serde_json::from_slice(bytes).map_err(|e| {
            let what = if e.is_syntax() || e.is_eof() {
                "message is not JSON"
            } else {
                "message is not a CloudEvent"
            };
            DecodeError::new(None, format!("{what}: {e}"))
        })?;
        if attrs.specversion != SPEC_VERSION {
            return Err(DecodeError::new(
                Some(&attrs.ty),
                format!(
                    "unsupported CloudEvents specversion {:?} (this bus reads {SPEC_VERSION})",
                    attrs.specversion
                ),
            ));
        }
        Ok(attrs)
    }

    /// Decodes `data` into `T`; a missing `data` decodes as JSON `null`.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, DecodeError> {
        decode_data(&self.ty, self.data.unwrap_or(null()))
    }
}

fn null() -> &'static RawValue {
    // `RawValue::NULL` is a constant `null`.
    RawValue::NULL
}

/// Decodes the `data` of an event of type `event_type` into `T`.
///
/// On failure the error names the type and the path of the failing field.
pub fn decode_data<T: serde::de::DeserializeOwned>(
    event_type: &str,
    raw: &RawValue,
) -> Result<T, DecodeError> {
    match serde_json::from_str(raw.get()) {
        Ok(v) => Ok(v),
        Err(_) => {
            // Slow path, only on error: decode again tracking the path.
            let mut de = serde_json::Deserializer::from_str(raw.get());
            let err = match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Ok(_) => unreachable_decode(),
                Err(e) => e,
            };
            let path = err.path().to_string();
            let inner = err.into_inner();
            let field = if path == "." || path.is_empty() {
                "data".to_owned()
            } else {
                format!("data.{path}")
            };
            Err(DecodeError::new(
                Some(event_type),
                format!(
                    "data of `{event_type}` does not fit {}: {field}: {inner}",
                    short_type_name::<T>()
                ),
            ))
        }
    }
}

#[cold]
fn unreachable_decode() -> ! {
    panic!("serde_json rejected a value that serde_path_to_error accepted")
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// The attributes a publish sets besides the event's own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp<'a> {
    pub id: uuid::Uuid,
    pub source: &'a str,
    pub time: SystemTime,
}

#[derive(Serialize)]
#[serde(bound(serialize = "T: Serialize, S: fmt::Display"))]
struct Envelope<'a, T, S> {
    specversion: &'static str,
    id: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
    source: &'a str,
    datacontenttype: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<AsStr<S>>,
    time: AsStr<Rfc3339>,
    data: &'a T,
}

/// Serializes a `Display` value as a JSON string without an intermediate `String`.
struct AsStr<D>(D);

impl<D: fmt::Display> Serialize for AsStr<D> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// RFC 3339 UTC time with microseconds, as cloudevents-sdk writes it.
pub(crate) struct Rfc3339(pub SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use chrono::{Datelike, Timelike};
        let t: chrono::DateTime<chrono::Utc> = self.0.into();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.nanosecond() / 1000
        )
    }
}

/// Writes `event` as structured-mode CloudEvents JSON.
pub(crate) fn encode<E: Event>(event: &E, stamp: Stamp<'_>) -> Result<Bytes, serde_json::Error> {
    let mut id_buf = uuid::Uuid::encode_buffer();
    let id = stamp.id.hyphenated().encode_lower(&mut id_buf);
    let envelope = Envelope {
        specversion: SPEC_VERSION,
        id,
        ty: E::TYPE,
        source: stamp.source,
        datacontenttype: "application/json",
        subject: event.subject().map(AsStr),
        time: AsStr(Rfc3339(stamp.time)),
        data: event,
    };
    let mut buf = Vec::with_capacity(192);
    serde_json::to_writer(&mut buf, &envelope)?;
    Ok(Bytes::from(buf))
}

/// Writes a `cloudevents::Event` as structured-mode JSON.
pub fn encode_cloudevent(event: &cloudevents::Event) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(event).map(Bytes::from)
}

/// Reads a whole `cloudevents::Event` (for global handlers and interop).
pub fn decode_cloudevent(bytes: &[u8]) -> Result<cloudevents::Event, DecodeError> {
    // Check the envelope first for clear reasons, then let the SDK read it.
    let attrs = Attributes::parse(bytes)?;
    serde_json::from_slice(bytes)
        .map_err(|e| DecodeError::new(Some(&attrs.ty), format!("invalid CloudEvent: {e}")))
}

/// Decodes a typed event from a structured CloudEvent (`type` must match `E` or one of its aliases).
pub fn decode<E: Event>(bytes: &[u8]) -> Result<E, DecodeError> {
    let attrs = Attributes::parse(bytes)?;
    let info = E::info();
    if attrs.ty != E::TYPE && !info.aliases.contains(&&*attrs.ty) {
        return Err(DecodeError::new(
            Some(&attrs.ty),
            format!(
                "expected an event of type `{}`, got `{}`",
                E::TYPE,
                attrs.ty
            ),
        ));
    }
    attrs.data_as()
}

/// `source` as written on the wire: `/service` for a bare name.
pub(crate) fn normalize_source(source: &str) -> Cow<'_, str> {
    if source.starts_with('/') || source.contains(':') {
        Cow::Borrowed(source)
    } else {
        Cow::Owned(format!("/{source}"))
    }
}
