//! Structured-mode CloudEvents JSON, written and read in one pass, and the
//! one validator every path goes through.
//!
//! A typed publish serializes the attributes from a small struct of borrowed
//! strings and `data` from the payload's own `Serialize`, straight into one
//! buffer. A typed handler reads the attributes as borrowed strings and
//! `data` as a [`RawValue`] that is decoded straight into its type. The
//! output is exactly what `cloudevents-sdk` writes, and everything it writes
//! is accepted (see the round-trip tests).
//!
//! # What is a valid CloudEvent
//!
//! Every reader — a typed handler ([`parse_typed`]), [`Attributes::parse`],
//! a global handler ([`Attributes::to_cloudevent`]) — gives the same verdict
//! from the same single parse, by the rules of CloudEvents 1.0.2 and its
//! JSON format:
//!
//! - exactly one JSON value, an object, with no member twice;
//! - `specversion` `1.0`, or `0.3`, which is read as 1.0 (`schemaurl`
//!   becomes `dataschema`; `datacontentencoding: base64` means `data` holds
//!   base64, read as `data_base64`; a `data_base64` member, which the
//!   Python SDK writes in 0.3 events too, is read as in 1.0);
//! - `id`, `source`, `specversion`, `type` present and non-empty strings;
//!   `subject`, `datacontenttype`, `dataschema`, `time` non-empty strings
//!   when present (`null` means absent, as the JSON format says);
//! - no string value with a control character (U+0000-U+001F,
//!   U+007F-U+009F), a lone surrogate or a noncharacter (U+FDD0-U+FDEF,
//!   U+xFFFE, U+xFFFF);
//! - `time` in RFC 3339 with a UTC offset, on a date that exists;
//!   `datacontenttype` a media type; `dataschema` an absolute URI;
//! - extension names of `a-z` and `0-9` only (longer than 20 is accepted),
//!   values a string, a boolean or a 32-bit integer (`null`: absent);
//! - `data` or `data_base64`, not both; `data_base64` standard padded
//!   base64; with a `datacontenttype` that is not JSON, `data` is a string.
//!
//! `data` itself is the producer's: any JSON (the handler's type decides).
//! A typed handler is given JSON `data` only; an event with binary data
//! (`data_base64`) reaches a global handler as [`cloudevents::Data::Binary`]
//! and a typed one as a reason.
//!
//! Every reason names the attribute or the field that failed and why, in
//! at most about 300 characters, values elided and escaped.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;
use std::time::SystemTime;

use bytes::Bytes;
use serde::de::Error as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::escape::{bounded, quoted, ticked};
use crate::event::Event;

mod check;
use check::Val;
pub use check::is_json_media_type;

/// The CloudEvents spec version this crate writes and reads.
pub const SPEC_VERSION: &str = "1.0";
/// The older spec version that is read too (as 1.0).
pub const SPEC_VERSION_03: &str = "0.3";
/// The content type of a structured-mode CloudEvent in JSON.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// The longest reason a [`DecodeError`] carries, in characters.
pub const MAX_REASON: usize = 300;

/// Why a message could not be turned into an event.
///
/// Its message names the attribute or the field that failed (`data.rating`)
/// and why, in at most [`MAX_REASON`] characters, with control characters
/// escaped: it is stored in dead letters and logged as it is. It carries the
/// CloudEvents type and id when the message has readable ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    event_type: Option<String>,
    event_id: Option<String>,
    message: String,
}

impl DecodeError {
    /// An error about a message of type `event_type` (when it is known).
    ///
    /// The message is escaped and cut to [`MAX_REASON`] characters.
    pub fn new(event_type: Option<&str>, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = if message.len() <= MAX_REASON
            && matches!(crate::escape::escape(&message), Cow::Borrowed(_))
        {
            message
        } else {
            bounded(&message, MAX_REASON)
        };
        Self {
            event_type: event_type.map(str::to_owned),
            event_id: None,
            message,
        }
    }

    /// The same error, about the event with this `id`.
    pub fn with_event_id(mut self, event_id: Option<&str>) -> Self {
        self.event_id = event_id.map(str::to_owned);
        self
    }

    /// The CloudEvents type of the message, when it could be read.
    pub fn event_type(&self) -> Option<&str> {
        self.event_type.as_deref()
    }

    /// The CloudEvents id of the message, when it could be read.
    pub fn event_id(&self) -> Option<&str> {
        self.event_id.as_deref()
    }
}

/// The attributes of a structured CloudEvent, borrowed from the message and
/// checked (see [the module docs](self)).
///
/// Extension attributes are kept as their undecoded JSON; a member that
/// appears twice is an error, never "the last one wins".
#[derive(Debug)]
#[non_exhaustive]
pub struct Attributes<'a> {
    /// `specversion`: always `1.0` once read (a 0.3 event is read as 1.0).
    pub specversion: Cow<'a, str>,
    /// `id`.
    pub id: Cow<'a, str>,
    /// `type`.
    pub ty: Cow<'a, str>,
    /// `source`.
    pub source: Cow<'a, str>,
    /// `subject`.
    pub subject: Option<Cow<'a, str>>,
    /// `time` as RFC 3339 text.
    pub time: Option<Cow<'a, str>>,
    /// `datacontenttype`.
    pub datacontenttype: Option<Cow<'a, str>>,
    /// `dataschema` (`schemaurl` in CloudEvents 0.3).
    pub dataschema: Option<Cow<'a, str>>,
    /// Extension attributes: names and undecoded JSON values (a string, a
    /// boolean or an integer), in message order.
    pub extensions: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// `data`, undecoded.
    pub data: Option<&'a RawValue>,
    /// Binary data as its base64 text (checked): `data_base64`, or the
    /// `data` of a CloudEvents 0.3 event with `datacontentencoding: base64`.
    pub data_base64: Option<Cow<'a, str>>,
}

impl<'a> Attributes<'a> {
    /// Reads and checks the attributes of a structured-mode CloudEvent.
    ///
    /// Fails, with a reason that names the attribute, on anything that is
    /// not one JSON object, not a valid CloudEvent, or of a spec version
    /// other than 1.0 and 0.3.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let text = utf8(bytes)?;
        match read::<serde::de::IgnoredAny, _>(text, |_| false) {
            Ok(Read::Done(attrs, _)) => Ok(attrs),
            Err(Fail::Invalid(e)) => Err(e),
            Err(Fail::Json(e)) => Err(not_json(&e)),
            // Without a direct decode neither can happen.
            Ok(Read::Again) => Err(DecodeError::new(None, "message is not a CloudEvent")),
        }
    }

    /// Decodes `data` into `T`; a missing `data` decodes as JSON `null`.
    ///
    /// An event with binary data (`data_base64`) gives a reason instead.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, DecodeError> {
        decode_data(&self.ty, self.json_data()?).map_err(|e| e.with_event_id(Some(&self.id)))
    }

    /// `data` as JSON (`null` when the event has none), for a typed reader.
    ///
    /// An event with binary data (`data_base64`) gives a reason: a typed
    /// handler reads JSON, the binary data reaches a global handler.
    pub fn json_data(&self) -> Result<&'a RawValue, DecodeError> {
        if self.data_base64.is_some() {
            return Err(DecodeError::new(
                Some(&self.ty),
                format!(
                    "event {} carries binary data (`data_base64`, {}), which a typed handler cannot read as JSON; read it in a `#[handler(all)]` taking `CloudEvent`, or have the producer send JSON `data`",
                    ticked(&self.ty),
                    match &self.datacontenttype {
                        Some(ct) => format!("content type {}", ticked(ct)),
                        None => "no content type".to_owned(),
                    }
                ),
            )
            .with_event_id(Some(&self.id)));
        }
        Ok(self.data.unwrap_or(RawValue::NULL))
    }

    /// The bytes of binary data (`data_base64`), when the event has them.
    pub fn binary_data(&self) -> Option<Vec<u8>> {
        self.data_base64
            .as_deref()
            .and_then(|b| check::base64_decode(b).ok())
    }

    /// The event as a `cloudevents::Event` (1.0), built from these checked
    /// attributes rather than parsed again: `data` as
    /// [`Data::Json`](cloudevents::Data::Json) when the content type is JSON
    /// (or absent), [`Data::String`](cloudevents::Data::String) otherwise;
    /// `data_base64` as JSON when the content type is JSON and the bytes
    /// are, [`Data::Binary`](cloudevents::Data::Binary) otherwise (as
    /// cloudevents-sdk reads them).
    pub fn to_cloudevent(&self) -> Result<crate::CloudEvent, DecodeError> {
        use cloudevents::event::{AttributesWriter, EventBuilder as _, TryIntoUrl};
        let fail =
            |why: String| DecodeError::new(Some(&self.ty), why).with_event_id(Some(&self.id));
        let mut event = cloudevents::EventBuilderV10::new()
            .id(&*self.id)
            .ty(&*self.ty)
            .source(&*self.source)
            .build()
            .map_err(|e| fail(format!("invalid CloudEvent: {e}")))?;
        event.set_subject(self.subject.as_deref());
        let time = match self.time.as_deref() {
            Some(t) => Some(
                chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|e| fail(format!("attribute `time` is {}: {e}", quoted(t))))?
                    .with_timezone(&chrono::Utc),
            ),
            None => None,
        };
        event.set_time(time);
        event.set_datacontenttype(self.datacontenttype.as_deref());
        let schema = match self.dataschema.as_deref() {
            Some(s) => Some(
                s.into_url()
                    .map_err(|e| fail(format!("attribute `dataschema` is {}: {e}", quoted(s))))?,
            ),
            None => None,
        };
        event.set_dataschema(schema);
        for (name, raw) in &self.extensions {
            event.set_extension(name, extension_value(raw.get()));
        }
        let json = is_json_media_type(self.datacontenttype.as_deref());
        let data = if let Some(b64) = self.data_base64.as_deref() {
            let bytes =
                check::base64_decode(b64).map_err(|w| fail(format!("`data_base64` {w}")))?;
            Some(match json.then(|| serde_json::from_slice(&bytes)) {
                Some(Ok(v)) => cloudevents::Data::Json(v),
                _ => cloudevents::Data::Binary(bytes),
            })
        } else if let Some(raw) = self.data {
            let data = if json {
                serde_json::from_str(raw.get()).map(cloudevents::Data::Json)
            } else {
                serde_json::from_str(raw.get()).map(cloudevents::Data::String)
            };
            Some(data.map_err(|e| fail(format!("`data` cannot be read: {e}")))?)
        } else {
            None
        };
        if let Some(data) = data {
            event.set_data_unchecked(data);
        }
        Ok(event)
    }
}

/// A CloudEvents extension value from its JSON text: a string, a boolean or
/// an integer as such; anything else (never in checked attributes) kept as
/// its JSON text.
pub(crate) fn extension_value(raw: &str) -> cloudevents::event::ExtensionValue {
    use cloudevents::event::ExtensionValue;
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::String(s)) => ExtensionValue::String(s),
        Ok(serde_json::Value::Bool(b)) => ExtensionValue::Boolean(b),
        Ok(serde_json::Value::Number(n)) if n.is_i64() => {
            ExtensionValue::Integer(n.as_i64().unwrap_or_default())
        }
        _ => ExtensionValue::String(raw.to_owned()),
    }
}

/// `bytes` as text, or why it is not JSON.
fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|e| {
        DecodeError::new(
            None,
            format!(
                "message is not JSON: it is not valid UTF-8 (byte {})",
                e.valid_up_to()
            ),
        )
    })
}

/// The reason for a message the JSON reader rejected.
#[cold]
fn not_json(e: &serde_json::Error) -> DecodeError {
    let what = if e.to_string().starts_with("trailing characters") {
        "message is more than one JSON value"
    } else {
        "message is not JSON"
    };
    DecodeError::new(None, format!("{what}: {e}"))
}

/// The reason for an invalid CloudEvent, with its type and id when they
/// can be read.
#[cold]
fn invalid(text: &str, why: String) -> DecodeError {
    let (ty, id) = peek(text);
    DecodeError::new(ty.as_deref(), why).with_event_id(id.as_deref())
}

/// The first `type` and `id` of a message, when they are valid strings,
/// read leniently (whatever else is wrong with it).
#[cold]
fn peek(text: &str) -> (Option<String>, Option<String>) {
    type Found = RefCell<(Option<String>, Option<String>)>;
    struct P<'f>(&'f Found);
    impl<'de> serde::de::Visitor<'de> for P<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
                let mut found = self.0.borrow_mut();
                let slot = match &*key {
                    "type" if found.0.is_none() => &mut found.0,
                    "id" if found.1.is_none() => &mut found.1,
                    _ => {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        continue;
                    }
                };
                if let Val::Str(s) = map.next_value::<Val<'de>>()?
                    && check::string(&s, true).is_ok()
                {
                    *slot = Some(s.into_owned());
                }
            }
            Ok(())
        }
    }
    let found = Found::default();
    let mut de = serde_json::Deserializer::from_str(text);
    let _ = serde::Deserializer::deserialize_map(&mut de, P(&found));
    found.into_inner()
}

/// Reads a structured CloudEvent in one pass. When `direct(type)` is true
/// for the message's type (and `type` comes before `data`, as every SDK
/// writes it), `data` is decoded straight into `T` and the returned
/// attributes carry no `data`; otherwise `data` is kept raw and `T` is `None`.
///
/// The verdict is the validator's (see [the module docs](self)); errors
/// name the attribute or the field of `T` that failed.
pub fn parse_typed<'a, T, F>(
    bytes: &'a [u8],
    direct: F,
) -> Result<(Attributes<'a>, Option<T>), DecodeError>
where
    T: serde::de::DeserializeOwned,
    F: Fn(&str) -> bool,
{
    // Validating UTF-8 once for the whole message is far cheaper than per string.
    let text = utf8(bytes)?;
    // What this crate writes, read without the general JSON map machinery.
    if let Some((attrs, data)) = own_layout(text) {
        if direct(&attrs.ty) {
            if let Ok(value) = serde_json::from_str::<T>(data) {
                return Ok((attrs, Some(value)));
            }
        } else if let Ok(raw) = serde_json::from_str::<&'a RawValue>(data) {
            let attrs = Attributes {
                data: Some(raw),
                ..attrs
            };
            return Ok((attrs, None));
        }
        // Data that does not fit, or more members after it: the general
        // reader decides.
    }
    match read::<T, &F>(text, &direct) {
        Ok(Read::Done(attrs, value)) => Ok((attrs, value)),
        Err(Fail::Invalid(e)) => Err(e),
        // `data` did not fit `T` (or was read before an attribute that
        // changes how to read it): the explaining path.
        Ok(Read::Again) | Err(Fail::Json(_)) => {
            let attrs = Attributes::parse(bytes)?;
            if direct(&attrs.ty) {
                let value = attrs.data_as::<T>()?;
                Ok((
                    Attributes {
                        data: None,
                        ..attrs
                    },
                    Some(value),
                ))
            } else {
                Ok((attrs, None))
            }
        }
    }
}

/// The bytes that end a run of plain ASCII in a JSON string: `"`, `\`,
/// control characters and everything from DEL up (one load per byte).
static STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i < 0x20 || i >= 0x7f || i == b'"' as usize || i == b'\\' as usize;
        i += 1;
    }
    t
};

/// Reads a message laid out exactly as [`encode`] writes it — members in
/// that order, strings without escapes, nothing after the closing brace —
/// returning its attributes and the text of its `data` (not yet checked).
/// Anything else gives `None` and goes through the general parser, and so
/// does anything the validator would reject: an empty required attribute,
/// a forbidden character, a `time` that is not RFC 3339 on a real date.
///
/// A message accepted here is valid JSON once `data` is: the fixed parts are
/// compared byte for byte, and each string runs to its closing quote
/// without a backslash or a control character.
fn own_layout(text: &str) -> Option<(Attributes<'_>, &str)> {
    /// The contents of a non-empty JSON string without escapes up to its
    /// closing quote, and the rest; characters beyond ASCII are checked
    /// only when there are some.
    fn plain(s: &str) -> Option<(&str, &str)> {
        let b = s.as_bytes();
        let end = b.iter().position(|&c| STOP[usize::from(c)])?;
        if b[end] == b'"' {
            return (end > 0).then(|| (&s[..end], &s[end + 1..]));
        }
        if b[end] < 0x7f {
            return None;
        }
        let close = end
            + b[end..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        (b[close] == b'"' && check::chars_ok(&s[..close])).then(|| (&s[..close], &s[close + 1..]))
    }
    let rest = text.strip_prefix(r#"{"specversion":"1.0","id":""#)?;
    let (id, rest) = plain(rest)?;
    let (ty, rest) = plain(rest.strip_prefix(r#","type":""#)?)?;
    let (source, rest) = plain(rest.strip_prefix(r#","source":""#)?)?;
    let after_source = rest;
    let mut rest = rest.strip_prefix(r#","datacontenttype":"application/json""#)?;
    // `application/json` as it stands in the message (so an envelope keeps
    // its position rather than a copy).
    let content_type = &after_source[20..36];
    let mut subject = None;
    if let Some(after) = rest.strip_prefix(r#","subject":""#) {
        let (s, after) = plain(after)?;
        subject = Some(Cow::Borrowed(s));
        rest = after;
    }
    let (time, rest) = plain(rest.strip_prefix(r#","time":""#)?)?;
    if !check::time_ok(time) {
        return None;
    }
    // The trace context, as `encode` writes it.
    let mut extensions = Vec::new();
    let mut rest = rest;
    for name in [crate::trace::TRACEPARENT, crate::trace::TRACESTATE] {
        let Some(after) = rest
            .strip_prefix(",\"")
            .and_then(|r| r.strip_prefix(name))
            .and_then(|r| r.strip_prefix("\":\""))
        else {
            continue;
        };
        let (_, after) = plain(after)?;
        // The value with its quotes: the text between the colon and `after`.
        let value = &rest[name.len() + 4..rest.len() - after.len()];
        let raw: &RawValue = serde_json::from_str(value).ok()?;
        extensions.push((Cow::Borrowed(name), raw));
        rest = after;
    }
    let data = rest.strip_prefix(r#","data":"#)?.strip_suffix('}')?;
    let attrs = Attributes {
        specversion: Cow::Borrowed(SPEC_VERSION),
        id: Cow::Borrowed(id),
        ty: Cow::Borrowed(ty),
        source: Cow::Borrowed(source),
        subject,
        time: Some(Cow::Borrowed(time)),
        datacontenttype: Some(Cow::Borrowed(content_type)),
        dataschema: None,
        extensions,
        data: None,
        data_base64: None,
    };
    Some((attrs, data))
}

/// A string borrowed from the input when it has no escapes.
struct Str<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// What the general reader made of a message.
// Returned by value once per message; a box would be an allocation.
#[allow(clippy::large_enum_variant)]
enum Read<'de, T> {
    /// Valid: its attributes, and `data` decoded into `T` when asked.
    Done(Attributes<'de>, Option<T>),
    /// `data` was decoded into `T` before an attribute that says it must be
    /// read otherwise (a later non-JSON `datacontenttype`, or base64 in
    /// 0.3): read again without the direct decode.
    Again,
}

/// Why the general reader stopped.
enum Fail {
    /// Not a valid CloudEvent, with the reason.
    Invalid(DecodeError),
    /// The JSON reader's error: not JSON, or `data` that does not fit `T`.
    Json(serde_json::Error),
}

/// The general reader: a structured CloudEvent, checked member by member in
/// one pass.
fn read<'a, T, F>(text: &'a str, direct: F) -> Result<Read<'a, T>, Fail>
where
    T: serde::de::DeserializeOwned,
    F: Fn(&str) -> bool,
{
    let reason = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Seed::<T, F> {
        direct,
        reason: &reason,
        _t: PhantomData,
    };
    let read =
        serde::de::DeserializeSeed::deserialize(seed, &mut de).and_then(|v| de.end().map(|()| v));
    read.map_err(|e| match reason.take() {
        Some(why) => Fail::Invalid(invalid(text, why)),
        None => Fail::Json(e),
    })
}

struct Seed<'r, T, F> {
    direct: F,
    /// Why the message is not a valid CloudEvent, once found (the error
    /// returned to serde only stops the reader).
    reason: &'r Cell<Option<String>>,
    _t: PhantomData<fn() -> T>,
}

impl<T, F> Seed<'_, T, F> {
    /// Records `why` and stops the reader.
    #[cold]
    fn fail<E: serde::de::Error>(&self, why: String) -> E {
        self.reason.set(Some(why));
        E::custom("invalid CloudEvent")
    }

    #[cold]
    fn not_object<E: serde::de::Error>(&self, what: &str) -> E {
        self.fail(format!(
            "message is not a CloudEvent: it is {what}, expected a JSON object with the event's attributes"
        ))
    }

    /// The next value, read as an attribute value; a string the JSON reader
    /// rejects for a lone surrogate is this attribute's fault.
    fn value<'de, A: serde::de::MapAccess<'de>>(
        &self,
        map: &mut A,
        what: &str,
    ) -> Result<Val<'de>, A::Error> {
        map.next_value::<Val<'de>>()
            .map_err(|e| self.bad_string(what, e))
    }

    #[cold]
    fn bad_string<E: serde::de::Error>(&self, what: &str, e: impl fmt::Display) -> E {
        let text = e.to_string();
        if text.contains("surrogate") || text.contains("escape") || text.contains("code point") {
            self.fail(format!(
                "{what} is not a valid CloudEvents string: {text} (a CloudEvents string must not contain lone surrogates)"
            ))
        } else {
            E::custom(text)
        }
    }
}

impl<'de, T, F> serde::de::DeserializeSeed<'de> for Seed<'_, T, F>
where
    T: serde::de::DeserializeOwned,
    F: Fn(&str) -> bool,
{
    type Value = Read<'de, T>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    V10,
    V03,
}

/// The reason for an event with both kinds of data.
const BOTH: &str =
    "`data` and `data_base64` are both present: a CloudEvent carries its data in one of them";

/// The reason for a duplicate member.
fn duplicate(name: &str) -> String {
    format!("duplicate attribute {}", ticked(name))
}

/// A required string attribute.
fn required<'de>(name: &str, v: Val<'de>) -> Result<Cow<'de, str>, String> {
    match v {
        Val::Str(s) => {
            check::string(&s, true).map_err(|why| format!("attribute `{name}` {why}"))?;
            Ok(s)
        }
        other => Err(format!(
            "attribute `{name}` is {}, expected a non-empty string",
            other.what()
        )),
    }
}

/// An optional string attribute (`null` means absent), checked by its kind.
fn optional<'de>(name: &str, v: Val<'de>) -> Result<Option<Cow<'de, str>>, String> {
    let s = match v {
        Val::Null => return Ok(None),
        Val::Str(s) => s,
        other => {
            let expected = match name {
                "time" => "an RFC 3339 timestamp string",
                "dataschema" | "schemaurl" => "a URI string",
                "datacontenttype" => "a media type string",
                _ => "a non-empty string",
            };
            return Err(format!(
                "attribute `{name}` is {}, expected {expected}",
                other.what()
            ));
        }
    };
    check::string(&s, true)
        .and_then(|()| match name {
            "time" => check::time(&s),
            "datacontenttype" => check::media_type(&s),
            "dataschema" | "schemaurl" => check::uri(&s),
            _ => Ok(()),
        })
        .map_err(|why| format!("attribute `{name}` {why}"))?;
    Ok(Some(s))
}

/// What a raw JSON value is, for a reason.
fn what_raw(raw: &RawValue) -> String {
    serde_json::from_str::<Val<'_>>(raw.get())
        .map_or_else(|_| "not a string".to_owned(), |v| v.what())
}

impl<'de, T, F> serde::de::Visitor<'de> for Seed<'_, T, F>
where
    T: serde::de::DeserializeOwned,
    F: Fn(&str) -> bool,
{
    type Value = Read<'de, T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a structured CloudEvent")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.not_object("a boolean"))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(self.not_object("a number"))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(self.not_object("a number"))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.not_object("a number"))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(self.not_object("a string"))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Err(self.not_object("null"))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.not_object("an array"))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut version: Option<Version> = None;
        let (mut id, mut ty, mut source) = (None, None, None);
        // `Some(None)`: given as `null` (absent, but seen once).
        let (mut subject, mut time, mut datacontenttype, mut dataschema) = (None, None, None, None);
        let mut extensions: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::new();
        let mut unset: Vec<Cow<'de, str>> = Vec::new();
        let mut data: Option<&'de RawValue> = None;
        let mut data_base64: Option<Option<Cow<'de, str>>> = None;
        let mut value: Option<T> = None;
        let mut seen_data = false;
        while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
            match &*key {
                "specversion" => {
                    if version.is_some() {
                        return Err(self.fail(duplicate(&key)));
                    }
                    version = Some(match self.value(&mut map, "attribute `specversion`")? {
                        Val::Str(s) if s == SPEC_VERSION => Version::V10,
                        Val::Str(s) if s == SPEC_VERSION_03 => Version::V03,
                        Val::Str(s) => {
                            return Err(self.fail(format!(
                                "unsupported CloudEvents specversion {} (this bus reads 1.0, and 0.3 as 1.0)",
                                quoted(&s)
                            )));
                        }
                        other => {
                            return Err(
                                self.fail(required("specversion", other).err().unwrap_or_default())
                            );
                        }
                    });
                }
                "id" | "type" | "source" => {
                    let (slot, name) = match &*key {
                        "id" => (&mut id, "id"),
                        "type" => (&mut ty, "type"),
                        _ => (&mut source, "source"),
                    };
                    if slot.is_some() {
                        return Err(self.fail(duplicate(name)));
                    }
                    let v = self.value(&mut map, &format!("attribute `{name}`"))?;
                    *slot = Some(required(name, v).map_err(|why| self.fail(why))?);
                }
                "subject" | "time" | "datacontenttype" | "dataschema" => {
                    let (slot, name) = match &*key {
                        "subject" => (&mut subject, "subject"),
                        "time" => (&mut time, "time"),
                        "datacontenttype" => (&mut datacontenttype, "datacontenttype"),
                        _ => (&mut dataschema, "dataschema"),
                    };
                    if slot.is_some() {
                        return Err(self.fail(duplicate(name)));
                    }
                    let v = self.value(&mut map, &format!("attribute `{name}`"))?;
                    *slot = Some(optional(name, v).map_err(|why| self.fail(why))?);
                }
                "data" => {
                    if std::mem::replace(&mut seen_data, true) {
                        return Err(self.fail(duplicate("data")));
                    }
                    let json = datacontenttype
                        .as_ref()
                        .is_none_or(|ct: &Option<Cow<'de, str>>| is_json_media_type(ct.as_deref()));
                    match &ty {
                        Some(t) if json && version != Some(Version::V03) && (self.direct)(t) => {
                            value = Some(map.next_value::<T>()?);
                        }
                        _ => data = Some(map.next_value::<&'de RawValue>()?),
                    }
                }
                "data_base64" => {
                    if data_base64.is_some() {
                        return Err(self.fail(duplicate("data_base64")));
                    }
                    data_base64 = Some(match self.value(&mut map, "`data_base64`")? {
                        Val::Str(s) => Some(s),
                        Val::Null => None,
                        other => {
                            return Err(self.fail(format!(
                                "`data_base64` is {}, expected a base64 string",
                                other.what()
                            )));
                        }
                    });
                }
                _ => {
                    check::attribute_name(&key).map_err(|why| self.fail(why))?;
                    if extensions.iter().any(|(k, _)| *k == key) || unset.contains(&key) {
                        return Err(self.fail(duplicate(&key)));
                    }
                    let raw = map.next_value::<&'de RawValue>()?;
                    let what = format!("extension attribute {}", ticked(&key));
                    let v = serde_json::from_str::<Val<'_>>(raw.get())
                        .map_err(|e| self.bad_string::<A::Error>(&what, e))?;
                    if matches!(v, Val::Null) {
                        unset.push(key);
                        continue;
                    }
                    check::extension_value(&v).map_err(|why| self.fail(format!("{what} {why}")))?;
                    extensions.push((key, raw));
                }
            }
        }
        let missing = |name: &str| {
            self.fail(format!(
                "message is not a CloudEvent: required attribute `{name}` is missing"
            ))
        };
        let Some(version) = version else {
            return Err(missing("specversion"));
        };
        let Some(id) = id else {
            return Err(missing("id"));
        };
        let Some(ty) = ty else {
            return Err(missing("type"));
        };
        let Some(source) = source else {
            return Err(missing("source"));
        };
        let mut dataschema = dataschema.flatten();
        let mut data_base64 = data_base64.flatten();
        let mut base64_member = "`data_base64`";
        if version == Version::V03 {
            // 0.3 carries base64 in `data` with `datacontentencoding:
            // base64`; a `data_base64` (what the Python SDK's 1.x API
            // writes for bytes, whatever the version) is read as in 1.0.
            if let Some(at) = extensions.iter().position(|(k, _)| k == "schemaurl") {
                let (_, raw) = extensions.remove(at);
                let v = serde_json::from_str::<Val<'de>>(raw.get())
                    .map_err(|e| self.bad_string::<A::Error>("attribute `schemaurl`", e))?;
                let url = optional("schemaurl", v).map_err(|why| self.fail(why))?;
                if dataschema.is_some() {
                    return Err(self.fail(
                        "`schemaurl` (CloudEvents 0.3) and `dataschema` (1.0) are both present"
                            .to_owned(),
                    ));
                }
                dataschema = url;
            }
            if let Some(at) = extensions
                .iter()
                .position(|(k, _)| k == "datacontentencoding")
            {
                let (_, raw) = extensions.remove(at);
                match serde_json::from_str::<Val<'de>>(raw.get()) {
                    Ok(Val::Str(s)) if s.eq_ignore_ascii_case("base64") => {
                        if value.is_some() {
                            return Ok(Read::Again);
                        }
                        if data.is_some() && data_base64.is_some() {
                            return Err(self.fail(BOTH.to_owned()));
                        }
                        if let Some(raw) = data.take() {
                            let Ok(Str(text)) = serde_json::from_str::<Str<'de>>(raw.get()) else {
                                return Err(self.fail(format!(
                                    "`data` is {}, but `datacontentencoding` is `base64`: expected a base64 string",
                                    what_raw(raw)
                                )));
                            };
                            data_base64 = Some(text);
                            seen_data = false;
                            base64_member = "`data` (`datacontentencoding: base64`)";
                        }
                    }
                    Ok(Val::Str(s)) => {
                        return Err(self.fail(format!(
                            "attribute `datacontentencoding` is {}: CloudEvents 0.3 data can only be encoded as `base64`",
                            quoted(&s)
                        )));
                    }
                    Ok(other) => {
                        return Err(self.fail(format!(
                            "attribute `datacontentencoding` is {}, expected the string `base64`",
                            other.what()
                        )));
                    }
                    Err(e) => return Err(self.bad_string("attribute `datacontentencoding`", e)),
                }
            }
        }
        if seen_data && data_base64.is_some() {
            return Err(self.fail(BOTH.to_owned()));
        }
        if let Some(b64) = &data_base64 {
            check::base64_text(b64).map_err(|why| self.fail(format!("{base64_member} {why}")))?;
        }
        let datacontenttype = datacontenttype.flatten();
        if seen_data && !is_json_media_type(datacontenttype.as_deref()) {
            if value.is_some() {
                return Ok(Read::Again);
            }
            if let Some(raw) = data
                && !raw.get().starts_with('"')
            {
                return Err(self.fail(format!(
                    "`data` is {}, but `datacontenttype` {} is not JSON: such data must be a JSON string (or base64 in `data_base64`)",
                    what_raw(raw),
                    ticked(datacontenttype.as_deref().unwrap_or_default())
                )));
            }
        }
        let attrs = Attributes {
            specversion: Cow::Borrowed(SPEC_VERSION),
            id,
            ty,
            source,
            subject: subject.flatten(),
            time: time.flatten(),
            datacontenttype,
            dataschema,
            extensions,
            data,
            data_base64,
        };
        if value.is_none() && (self.direct)(&attrs.ty) {
            // `data` came before `type`, or is absent (decoded as `null`),
            // or is binary (a reason).
            let raw = attrs.json_data().map_err(|e| self.fail(e.to_string()))?;
            value = Some(serde_json::from_str(raw.get()).map_err(A::Error::custom)?);
            return Ok(Read::Done(
                Attributes {
                    data: None,
                    ..attrs
                },
                value,
            ));
        }
        Ok(Read::Done(attrs, value))
    }
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
                format!("data.{}", bounded(&path, 60))
            };
            Err(DecodeError::new(
                Some(event_type),
                format!(
                    "data of {} does not fit {}: {field}: {}",
                    ticked(event_type),
                    short_type_name::<T>(),
                    bounded(&inner.to_string(), 160)
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
/// The attributes a publish sets besides the event's own (`source` is
/// written as `/source` unless it starts with `/` or is an absolute URI).
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    /// The CloudEvents `id` ([`new_event_id`]).
    pub id: uuid::Uuid,
    /// The `source` as given (a bare name is written as `/name`).
    pub source: &'a str,
    /// The RFC 3339 `time` ([`Rfc3339::write`]); formatted once for a batch.
    pub time: &'a [u8; 27],
    /// The trace context, written as the `traceparent` and `tracestate`
    /// extensions (CloudEvents Distributed Tracing).
    pub trace: Option<&'a crate::trace::TraceContext>,
}

/// Serializes a `Display` value as a JSON string without an intermediate `String`.
struct AsStr<D>(D);

impl<D: fmt::Display> Serialize for AsStr<D> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// The current time, and the same formatted for a CloudEvent's `time`.
pub fn now_stamped() -> (SystemTime, [u8; 27]) {
    let now = SystemTime::now();
    let mut time = [0u8; 27];
    Rfc3339(now).write(&mut time);
    (now, time)
}

/// RFC 3339 UTC time with microseconds (`2026-11-27T11:01:30.123456Z`).
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(pub SystemTime);

impl Rfc3339 {
    /// Formats into a fixed buffer without touching the heap. The date and
    /// time of day are computed once per second per thread, only the
    /// microseconds for every call.
    pub fn write(&self, buf: &mut [u8; 27]) {
        thread_local! {
            static PREFIX: std::cell::Cell<(u64, [u8; 19])> =
                const { std::cell::Cell::new((u64::MAX, [0; 19])) };
        }
        let since = self
            .0
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since.as_secs();
        let prefix = PREFIX.with(|cell| {
            let (cached, prefix) = cell.get();
            if cached == secs {
                return prefix;
            }
            let prefix = Self::date_time(secs);
            cell.set((secs, prefix));
            prefix
        });
        buf[..19].copy_from_slice(&prefix);
        buf[19] = b'.';
        put_digits(&mut buf[20..26], u64::from(since.subsec_micros()), 6);
        buf[26] = b'Z';
    }

    /// `YYYY-MM-DDTHH:MM:SS` of `secs` since the Unix epoch.
    fn date_time(secs: u64) -> [u8; 19] {
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (hh, mm, ss) = (rem / 3600, (rem % 3600) / 60, rem % 60);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        let mut buf = *b"0000-00-00T00:00:00";
        put_digits(&mut buf[0..4], y.clamp(0, 9999) as u64, 4);
        put_digits(&mut buf[5..7], m as u64, 2);
        put_digits(&mut buf[8..10], d as u64, 2);
        put_digits(&mut buf[11..13], hh, 2);
        put_digits(&mut buf[14..16], mm, 2);
        put_digits(&mut buf[17..19], ss, 2);
        buf
    }
}

/// Writes `v` as `width` decimal digits (zero-padded).
fn put_digits(buf: &mut [u8], mut v: u64, width: usize) {
    for i in (0..width).rev() {
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 27];
        self.write(&mut buf);
        // The buffer holds only ASCII digits and separators.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

/// A UUIDv7 (RFC 9562): the Unix time in milliseconds, then 74 random bits
/// from a fast thread-local generator (no system call per id).
pub fn new_event_id(now: SystemTime) -> uuid::Uuid {
    let ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let random = fastrand::u128(..).to_le_bytes();
    let mut bytes = [0u8; 10];
    bytes.copy_from_slice(&random[..10]);
    uuid::Builder::from_unix_timestamp_millis(ms, &bytes).into_uuid()
}

/// Whether `s` can be written between JSON quotes as it is.
fn plain(s: &str) -> bool {
    plain_ascii(s.as_bytes())
}

/// Whether no byte of `b` is a [`STOP`] byte (`"`, `\`, a control
/// character, DEL or beyond ASCII), eight bytes at a time.
fn plain_ascii(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// Whether a byte of `x` (all below 0x80) is below `n` (n <= 0x80).
    fn below(x: u64, n: u8) -> bool {
        x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0
    }
    /// Whether a byte of `x` equals `c`.
    fn has(x: u64, c: u8) -> bool {
        let v = x ^ (ONES * u64::from(c));
        v.wrapping_sub(ONES) & !v & HIGH != 0
    }
    let mut chunks = b.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // Every byte below 0x80 (so adding one carries into no other
        // byte), none DEL (0x7f + 1 sets the high bit), none a control
        // character, a quote or a backslash.
        if x & HIGH != 0
            || x.wrapping_add(ONES) & HIGH != 0
            || below(x, 0x20)
            || has(x, b'"')
            || has(x, b'\\')
        {
            return false;
        }
    }
    chunks.remainder().iter().all(|&c| !STOP[usize::from(c)])
}

/// Why this crate will not write `s` as attribute `name` (the validator
/// would reject it): empty, or with a forbidden character.
#[cold]
fn unwritable(name: &str, why: String) -> serde_json::Error {
    <serde_json::Error as serde::ser::Error>::custom(format_args!("attribute `{name}` {why}"))
}

/// Writes `s` as a JSON string, escaping only when it has to; a value the
/// validator would reject (empty, a forbidden character) is an error, so
/// the bus never publishes what its readers refuse.
fn put_str(buf: &mut Vec<u8>, name: &str, s: &str) -> Result<(), serde_json::Error> {
    if s.is_empty() {
        return Err(unwritable(
            name,
            "is empty, expected a non-empty string".into(),
        ));
    }
    if plain(s) {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
        Ok(())
    } else {
        check::string(s, true).map_err(|why| unwritable(name, why))?;
        serde_json::to_writer(&mut *buf, s)
    }
}

/// Writes `event` as structured-mode CloudEvents JSON: the same members in
/// the same order as cloudevents-sdk, attributes copied without an escaping
/// pass when they need none, `data` from the payload's own `Serialize`.
pub fn encode<E: Event>(event: &E, stamp: Stamp<'_>) -> Result<Bytes, serde_json::Error> {
    let mut buf = Vec::with_capacity(size_hint());
    buf.extend_from_slice(b"{\"specversion\":\"1.0\",\"id\":\"");
    let mut id_buf = uuid::Uuid::encode_buffer();
    buf.extend_from_slice(stamp.id.hyphenated().encode_lower(&mut id_buf).as_bytes());
    buf.extend_from_slice(b"\",\"type\":");
    put_str(&mut buf, "type", E::TYPE)?;
    buf.extend_from_slice(b",\"source\":");
    if needs_slash(stamp.source) && plain(stamp.source) {
        buf.extend_from_slice(b"\"/");
        buf.extend_from_slice(stamp.source.as_bytes());
        buf.push(b'"');
    } else {
        put_str(&mut buf, "source", &normalize_source(stamp.source))?;
    }
    buf.extend_from_slice(b",\"datacontenttype\":\"application/json\"");
    if let Some(subject) = event.subject() {
        const MEMBER: &[u8] = b",\"subject\":";
        buf.extend_from_slice(MEMBER);
        let at = buf.len();
        serde_json::to_writer(&mut buf, &AsStr(subject))?;
        let written = &buf[at..];
        if written == b"\"\"" {
            // An empty subject is no subject (CloudEvents forbids an empty one).
            buf.truncate(at - MEMBER.len());
        } else if !plain_ascii(&written[1..written.len() - 1]) {
            // Escaped or beyond ASCII: checked as the readers will.
            let text: String = serde_json::from_slice(written)?;
            check::string(&text, true).map_err(|why| unwritable("subject", why))?;
        }
    }
    buf.extend_from_slice(b",\"time\":\"");
    buf.extend_from_slice(stamp.time);
    buf.push(b'"');
    if let Some(trace) = stamp.trace {
        buf.extend_from_slice(b",\"traceparent\":\"");
        buf.extend_from_slice(&trace.traceparent_bytes());
        buf.push(b'"');
        if let Some(state) = &trace.state {
            buf.extend_from_slice(b",\"tracestate\":");
            put_str(&mut buf, "tracestate", state)?;
        }
    }
    buf.extend_from_slice(b",\"data\":");
    serde_json::to_writer(&mut buf, event)?;
    buf.push(b'}');
    LAST_SIZE.set(buf.len());
    Ok(Bytes::from(buf))
}

thread_local! {
    /// The size of the last event this thread encoded.
    static LAST_SIZE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The capacity to encode an event into: the last one's size and a
/// margin, as a thread tends to publish the same types over and over (a
/// buffer that grows is copied; one far too large keeps its slack for as
/// long as the message is queued). Attributes alone take ~230 bytes.
fn size_hint() -> usize {
    let last = LAST_SIZE.get();
    (last + last / 8 + 16).clamp(384, 64 * 1024)
}

/// Writes a `cloudevents::Event` as structured-mode JSON.
pub fn encode_cloudevent(event: &cloudevents::Event) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(event).map(Bytes::from)
}

/// Reads a whole `cloudevents::Event` (for global handlers and interop).
///
/// The validator's verdict, from one parse: the event is built from the
/// checked attributes ([`Attributes::to_cloudevent`]), never read a second
/// time by the SDK's own deserializer. A CloudEvents 0.3 event comes out as
/// 1.0.
pub fn decode_cloudevent(bytes: &[u8]) -> Result<cloudevents::Event, DecodeError> {
    Attributes::parse(bytes)?.to_cloudevent()
}

/// Decodes a typed event from a structured CloudEvent (`type` must match `E` or one of its aliases).
pub fn decode<E: Event>(bytes: &[u8]) -> Result<E, DecodeError> {
    let aliases = E::info().aliases;
    match parse_typed::<E, _>(bytes, |ty| ty == E::TYPE || aliases.contains(&ty))? {
        (_, Some(event)) => Ok(event),
        (attrs, None) => Err(DecodeError::new(
            Some(&attrs.ty),
            format!(
                "expected an event of type `{}`, got {}",
                E::TYPE,
                ticked(&attrs.ty)
            ),
        )
        .with_event_id(Some(&attrs.id))),
    }
}

/// RFC 3339 UTC with microseconds (`2026-11-27T11:01:30.123456Z`), as this
/// crate and the CloudEvents SDKs write `time`.
pub fn format_time(t: SystemTime) -> String {
    Rfc3339(t).to_string()
}

/// Parses an RFC 3339 time with an offset (what [`format_time`] writes, and
/// any other valid CloudEvents `time`).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| SystemTime::from(t.with_timezone(&chrono::Utc)))
}

/// `source` as written on the wire: `/service` for a bare name (a URI or a
/// path is kept as it is).
pub fn normalize_source(source: &str) -> Cow<'_, str> {
    if needs_slash(source) {
        Cow::Owned(format!("/{source}"))
    } else {
        Cow::Borrowed(source)
    }
}

fn needs_slash(source: &str) -> bool {
    !(source.starts_with('/') || source.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_chrono() {
        for micros in [
            0u64,
            951_782_400_000_000,
            1_709_164_799_999_999,
            1_764_241_290_123_456,
            // The same second again (cached date), then the next one.
            1_764_241_290_999_999,
            1_764_241_291_000_000,
            4_102_444_800_000_001,
        ] {
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(micros);
            let ours = Rfc3339(t).to_string();
            let chrono = chrono::DateTime::<chrono::Utc>::from(t)
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            assert_eq!(ours, chrono);
        }
    }

    #[test]
    fn event_ids_are_v7_and_time_ordered() {
        let t = SystemTime::now();
        let a = new_event_id(t);
        let b = new_event_id(t + std::time::Duration::from_millis(1));
        assert_eq!(a.get_version_num(), 7);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        assert!(a < b);
        assert_ne!(new_event_id(t), new_event_id(t));
    }

    /// `Event` by hand: this crate cannot use the derive, which names `::eventbus`.
    macro_rules! event {
        ($ty:ident, $name:literal, $subject:expr) => {
            impl Event for $ty {
                const TYPE: &'static str = $name;
                fn info() -> &'static crate::EventInfo {
                    static INFO: crate::EventInfo = crate::EventInfo::__new(
                        $name,
                        concat!(module_path!(), "::", stringify!($ty)),
                        None,
                        "",
                        None,
                        None,
                        &[],
                        None,
                        crate::event::schema_of::<$ty>,
                        None,
                    );
                    &INFO
                }
                fn subject(&self) -> Option<impl fmt::Display + '_> {
                    #[allow(clippy::redundant_closure_call)]
                    ($subject)(self)
                }
            }
        };
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
    struct Note {
        key: String,
        text: String,
    }
    event!(Note, "codec.note", |n: &Note| Some(n.key.clone()));

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
    struct Plain {
        n: u32,
    }
    event!(Plain, "codec.plain", |_: &Plain| None::<String>);

    fn encoded<E: Event>(event: &E, source: &str) -> Bytes {
        let now = SystemTime::now();
        let mut time = [0u8; 27];
        Rfc3339(now).write(&mut time);
        let stamp = Stamp {
            id: new_event_id(now),
            source,
            time: &time,
            trace: None,
        };
        encode(event, stamp).unwrap()
    }

    fn general<'a>(bytes: &'a [u8]) -> Attributes<'a> {
        Attributes::parse(bytes).unwrap()
    }

    #[test]
    fn the_trace_context_is_written_as_extensions_and_read_on_the_fast_path() {
        let tc = crate::TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("congo=t61rcWkgMzE"),
        )
        .unwrap();
        let now = SystemTime::now();
        let mut time = [0u8; 27];
        Rfc3339(now).write(&mut time);
        let traced = |trace| {
            let stamp = Stamp {
                id: new_event_id(now),
                source: "svc",
                time: &time,
                trace,
            };
            encode(&Plain { n: 7 }, stamp).unwrap()
        };
        let bytes = traced(Some(&tc));
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.contains(r#","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"congo=t61rcWkgMzE","data":"#),
            "{text}"
        );
        let (fast, data) = own_layout(text).expect("our own layout");
        let slow = general(&bytes);
        let names = |a: &Attributes<'_>| {
            a.extensions
                .iter()
                .map(|(n, v)| (n.to_string(), v.get().to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&fast), names(&slow));
        assert_eq!(data, r#"{"n":7}"#);
        let envelope = crate::Envelope::parse(bytes.clone()).unwrap();
        assert_eq!(envelope.trace_context(), Some(tc.clone()));
        assert_eq!(decode::<Plain>(&bytes).unwrap(), Plain { n: 7 });

        // Without a state, and without a trace.
        let mut bare = tc.clone();
        bare.state = None;
        let bytes = traced(Some(&bare));
        assert!(own_layout(std::str::from_utf8(&bytes).unwrap()).is_some());
        let envelope = crate::Envelope::parse(bytes).unwrap();
        assert_eq!(envelope.trace_context(), Some(bare.clone()));
        let envelope = crate::Envelope::parse(traced(None)).unwrap();
        assert_eq!(envelope.try_trace_context(), Ok(None));
    }

    #[test]
    fn a_malformed_traceparent_is_an_error_of_its_own_never_of_the_event() {
        let bytes = Bytes::from_static(
            br#"{"specversion":"1.0","id":"a","type":"codec.plain","source":"/s","traceparent":"00-zz","data":{"n":1}}"#,
        );
        let envelope = crate::Envelope::parse(bytes.clone()).unwrap();
        assert_eq!(envelope.trace_context(), None);
        assert!(envelope.try_trace_context().is_err());
        assert_eq!(decode::<Plain>(&bytes).unwrap(), Plain { n: 1 });
        let number = Bytes::from_static(
            br#"{"specversion":"1.0","id":"a","type":"codec.plain","source":"/s","traceparent":7,"data":{"n":1}}"#,
        );
        let envelope = crate::Envelope::parse(number).unwrap();
        let err = envelope.try_trace_context().unwrap_err();
        assert_eq!(err.reason(), "not a string");
    }

    #[test]
    fn own_layout_reads_what_encode_writes_like_the_general_parser() {
        let note = Note {
            key: "k-1".into(),
            text: "quote \" and \\ backslash".into(),
        };
        let with_subject = encoded(&note, "reviews");
        let without = encoded(&Plain { n: 7 }, "/svc");
        for bytes in [&with_subject, &without] {
            let text = std::str::from_utf8(bytes).unwrap();
            let (fast, data) = own_layout(text).expect("our own layout");
            let slow = general(bytes);
            assert_eq!(fast.specversion, slow.specversion);
            assert_eq!(fast.id, slow.id);
            assert_eq!(fast.ty, slow.ty);
            assert_eq!(fast.source, slow.source);
            assert_eq!(fast.subject, slow.subject);
            assert_eq!(fast.time, slow.time);
            assert_eq!(fast.datacontenttype, slow.datacontenttype);
            assert_eq!(data, slow.data.unwrap().get());
        }
        // What the typed fast path reads, an envelope keeps as positions:
        // building it allocates nothing.
        let (attrs, _) = parse_typed::<Plain, _>(&without, |_| true).unwrap();
        assert_eq!(crate::Envelope::new(without.clone(), &attrs).copies(), 0);
        let (attrs, _) = parse_typed::<Note, _>(&with_subject, |_| true).unwrap();
        let envelope = crate::Envelope::new(with_subject.clone(), &attrs);
        assert_eq!(envelope.copies(), 0);
        assert_eq!(envelope.datacontenttype(), Some("application/json"));
        assert_eq!(envelope.subject(), Some("k-1"));
        assert_eq!(decode::<Note>(&with_subject).unwrap(), note);
        assert_eq!(decode::<Plain>(&without).unwrap(), Plain { n: 7 });
    }

    #[test]
    fn anything_else_goes_through_the_general_parser() {
        const HEAD: &str = r#"{"specversion":"1.0","id":"i","type":"codec.plain","source":"/s","datacontenttype":"application/json","time":"2026-11-27T00:00:00Z","data":"#;
        fn parse(text: &str) -> Result<(Attributes<'_>, Option<serde_json::Value>), DecodeError> {
            parse_typed::<serde_json::Value, _>(text.as_bytes(), |_| true)
        }
        // An escape in an attribute: not our layout, still read.
        let escaped = HEAD.replace(r#""/s""#, r#""/s\"x""#) + "1}";
        assert!(own_layout(&escaped).is_none());
        assert_eq!(parse(&escaped).unwrap().0.source, "/s\"x");
        // A member after `data`: the fast path's data does not parse alone.
        let extra = format!(r#"{HEAD}{{"n":1}},"ext":"v"}}"#);
        let (attrs, value) = parse(&extra).unwrap();
        assert_eq!(value, Some(serde_json::json!({"n": 1})));
        assert_eq!(attrs.ty, "codec.plain");
        // Not JSON: rejected, never half-read.
        for bad in [
            format!("{HEAD}1}}x"),
            format!("{HEAD}1}}}}"),
            format!("{HEAD}}}"),
            format!("{HEAD}{{\"n\":1}}"),
            HEAD.replace(r#""/s""#, "\"/\u{1}s\"") + "1}",
        ] {
            assert!(parse(&bad).is_err(), "accepted {bad:?}");
        }
        // A type read raw (not decoded into `T`).
        let raw = format!("{HEAD}{{\"n\":2}}}}");
        let (attrs, value) = parse_typed::<Plain, _>(raw.as_bytes(), |_| false).unwrap();
        assert!(value.is_none());
        assert_eq!(attrs.data.unwrap().get(), r#"{"n":2}"#);
    }

    /// A valid event of type `codec.plain`, with `members` spliced in
    /// before `data` (e.g. `,"subject":"s"`).
    fn with(members: &str) -> String {
        format!(
            r#"{{"specversion":"1.0","id":"i-1","type":"codec.plain","source":"/s"{members},"data":{{"n":1}}}}"#
        )
    }

    /// Every reader's verdict on `text`: the general parser, a typed
    /// reader of `Plain`, a raw typed reader, and the global one.
    fn verdicts(text: &[u8]) -> [Result<(), String>; 4] {
        let parse = Attributes::parse(text).map(drop).map_err(|e| e.to_string());
        let typed = parse_typed::<Plain, _>(text, |t| t == "codec.plain")
            .map(drop)
            .map_err(|e| e.to_string());
        let raw = parse_typed::<Plain, _>(text, |_| false)
            .map(drop)
            .map_err(|e| e.to_string());
        let global = decode_cloudevent(text).map(drop).map_err(|e| e.to_string());
        [parse, typed, raw, global]
    }

    /// One payload per rule; every reader gives the same reason, which
    /// names what failed, is short and has no raw control character.
    #[test]
    fn every_rule_is_one_verdict_for_every_reader() {
        let big = "x".repeat(1 << 20);
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "message is not JSON"),
            (format!("{} {}", with(""), with("")), "message is more than one JSON value"),
            (format!("{}x", with("")), "more than one JSON value"),
            ("[1,2]".into(), "message is not a CloudEvent: it is an array"),
            ("42".into(), "message is not a CloudEvent: it is a number"),
            ("\"s\"".into(), "it is a string"),
            ("null".into(), "it is null"),
            (
                r#"{"id":"1","type":"t","source":"/s"}"#.into(),
                "required attribute `specversion` is missing",
            ),
            (
                r#"{"specversion":"1.0","type":"t","source":"/s"}"#.into(),
                "required attribute `id` is missing",
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"/s"}"#.into(),
                "required attribute `type` is missing",
            ),
            (
                r#"{"specversion":"1.0","id":"1","type":"t"}"#.into(),
                "required attribute `source` is missing",
            ),
            (
                with("").replace(r#""id":"i-1""#, r#""id":null"#),
                "attribute `id` is null, expected a non-empty string",
            ),
            (
                with("").replace(r#""id":"i-1""#, r#""id":42"#),
                "attribute `id` is a number (42), expected a non-empty string",
            ),
            (
                with("").replace(r#""source":"/s""#, r#""source":{"a":1}"#),
                "attribute `source` is an object, expected a non-empty string",
            ),
            (
                with("").replace(r#""id":"i-1""#, r#""id":"""#),
                "attribute `id` is empty, expected a non-empty string",
            ),
            (
                with("").replace(r#""source":"/s""#, r#""source":"""#),
                "attribute `source` is empty",
            ),
            (
                with("").replace(r#""type":"codec.plain""#, r#""type":"""#),
                "attribute `type` is empty",
            ),
            (
                with("").replace(r#""1.0""#, r#""2.0""#),
                "unsupported CloudEvents specversion \"2.0\"",
            ),
            (
                with("").replace(r#""1.0""#, "1.0"),
                "attribute `specversion` is a number (1), expected a non-empty string",
            ),
            (
                with("").replace(r#""type":"codec.plain""#, r#""type":"codec.plain\nforged""#),
                "attribute `type` contains the control character U+000A",
            ),
            (with(r#","subject":"a\u0000b""#), "attribute `subject` contains the control character U+0000"),
            (
                with("").replace(r#""id":"i-1""#, r#""id":"i\u0085""#),
                "attribute `id` contains the control character U+0085",
            ),
            (
                with("").replace(r#""source":"/s""#, "\"source\":\"/s\u{7f}\""),
                "attribute `source` contains the control character U+007F",
            ),
            (with(r#","subject":"\uFDD0""#), "attribute `subject` contains the noncharacter U+FDD0"),
            (with(r#","subject":"\uFFFF""#), "the noncharacter U+FFFF"),
            (with(r#","subject":"\uD83F\uDFFE""#), "the noncharacter U+1FFFE"),
            (
                with("").replace(r#""id":"i-1""#, r#""id":"\uD800x""#),
                "attribute `id` is not a valid CloudEvents string",
            ),
            (with(r#","subject":"\uDC00""#), "attribute `subject` is not a valid CloudEvents string"),
            (with(r#","subject":"""#), "attribute `subject` is empty"),
            (with(r#","subject":7"#), "attribute `subject` is a number (7)"),
            (with(r#","time":"2026-11-27T11:01:30""#), "attribute `time` is \"2026-11-27T11:01:30\", not an RFC 3339 timestamp: it has no UTC offset"),
            (with(r#","time":"2026-02-30T00:00:00Z""#), "2026-02-30 is not a date"),
            (with(r#","time":"2026-11-27T25:00:00Z""#), "is not a time of day"),
            (with(r#","time":1764241290"#), "attribute `time` is a number (1764241290), expected an RFC 3339 timestamp string"),
            (with(r#","datacontenttype":"json""#), "attribute `datacontenttype` is \"json\", not a media type"),
            (with(r#","dataschema":"schema.json""#), "attribute `dataschema` is \"schema.json\", not an absolute URI"),
            (with(r#","traceParent":"x""#), "extension attribute `traceParent` has upper-case letters"),
            (with(r#","trace-id":"x""#), "extension attribute `trace-id` has characters other than a-z and 0-9"),
            (with(r#","meta":{"a":1}"#), "extension attribute `meta` is an object, expected a string, a boolean or an integer"),
            (with(r#","tags":["a"]"#), "extension attribute `tags` is an array"),
            (with(r#","ratio":1.5"#), "extension attribute `ratio` is a number (1.5): a CloudEvents Integer has no fraction"),
            (with(r#","big":2147483648"#), "extension attribute `big` is 2147483648, outside the CloudEvents Integer range"),
            (with(r#","ext":"a\tb""#), "extension attribute `ext` contains the control character U+0009"),
            (with(r#","data_base64":"AAAA""#), "`data` and `data_base64` are both present"),
            (with(r#","id":"again""#), "duplicate attribute `id`"),
            (with(r#","subject":null,"subject":"s""#), "duplicate attribute `subject`"),
            (with(r#","ext":null,"ext":"s""#), "duplicate attribute `ext`"),
            (with(r#","data":2"#), "duplicate attribute `data`"),
            (
                with(r#","datacontenttype":"text/plain""#),
                "`data` is an object, but `datacontenttype` `text/plain` is not JSON",
            ),
            (
                r#"{"specversion":"1.0","id":"1","type":"codec.plain","source":"/s","data_base64":"AA="}"#.into(),
                "`data_base64` is not valid base64",
            ),
            (
                r#"{"specversion":"1.0","id":"1","type":"codec.plain","source":"/s","data_base64":5}"#.into(),
                "`data_base64` is a number (5), expected a base64 string",
            ),
            (
                r#"{"specversion":"0.3","id":"1","type":"codec.plain","source":"/s","datacontentencoding":"7bit","data":"x"}"#.into(),
                "attribute `datacontentencoding` is \"7bit\": CloudEvents 0.3 data can only be encoded as `base64`",
            ),
            (
                r#"{"specversion":"0.3","id":"1","type":"codec.plain","source":"/s","datacontentencoding":"base64","data":"%%%%"}"#.into(),
                "`data` (`datacontentencoding: base64`) is not valid base64",
            ),
            (
                r#"{"specversion":"0.3","id":"1","type":"codec.plain","source":"/s","schemaurl":"not a uri","data":{"n":1}}"#.into(),
                "attribute `schemaurl` is \"not a uri\", not an absolute URI",
            ),
            (
                r#"{"specversion":"0.3","id":"1","type":"codec.plain","source":"/s","datacontentencoding":"base64","data":"AAAA","data_base64":"AAAA"}"#.into(),
                "`data` and `data_base64` are both present",
            ),
            (with(&format!(r#","time":"{big}""#)), "attribute `time` is \"xxxxxxxx"),
            (
                with("").replace(r#""source":"/s""#, &format!(r#""source":{{"{big}":1}}"#)),
                "attribute `source` is an object",
            ),
            (with(&format!(r#","B{big}":1"#)), "extension attribute `Bxxxx"),
        ];
        for (text, expected) in &cases {
            let verdicts = verdicts(text.as_bytes());
            for (reader, verdict) in ["parse", "typed", "raw typed", "global"]
                .iter()
                .zip(&verdicts)
            {
                let short = crate::escape::bounded(text, 120);
                let why = verdict
                    .as_ref()
                    .err()
                    .unwrap_or_else(|| panic!("{reader} accepted {short}"));
                assert!(why.contains(expected), "{reader} on {short}: {why}");
                assert!(
                    why.chars().count() <= MAX_REASON,
                    "{reader}: {} chars",
                    why.len()
                );
                assert!(
                    !why.chars().any(|c| c.is_control()),
                    "{reader}: raw control character in {why:?}"
                );
            }
        }
        // Not UTF-8.
        for why in verdicts(b"{\"specversion\":\"1.0\",\"id\":\"\xff\"}") {
            assert!(why.unwrap_err().contains("not valid UTF-8 (byte 27)"));
        }
    }

    /// Valid events, whatever their spelling: every reader accepts them,
    /// and the global one builds the same event as cloudevents-sdk.
    #[test]
    fn valid_events_are_accepted_by_every_reader() {
        let long_name = "averyveryverylongextensionname";
        let cases = [
            with(""),
            with(r#","subject":null,"time":null,"datacontenttype":null,"dataschema":null"#),
            with(r#","unset":null"#),
            with(&format!(
                r#","{long_name}":"v","flag":true,"count":-2147483648"#
            )),
            with(r#","time":"2026-11-27T11:01:30.123+01:00""#),
            with(r#","time":"2024-02-29t00:00:00z""#),
            with(r#","subject":"Caf\u00e9 \u2615 \uD83D\uDE00""#),
            with(r#","subject":"quote \" and \\ backslash""#),
            with(r#","datacontenttype":"application/cloudevents+json; charset=utf-8""#),
            with(r#","dataschema":"https://example.com/plain.json""#),
            with(r#","datacontentencoding":"7bit","schemaurl":"x""#),
            r#"{"data":{"n":1},"source":"/s","type":"codec.plain","id":"1","specversion":"1.0"}"#
                .into(),
        ];
        for text in &cases {
            for (reader, verdict) in ["parse", "typed", "raw typed", "global"]
                .iter()
                .zip(verdicts(text.as_bytes()))
            {
                assert!(verdict.is_ok(), "{reader} rejected {text}: {verdict:?}");
            }
            let ours = decode_cloudevent(text.as_bytes()).unwrap();
            // cloudevents-sdk 0.9 misses a JSON content type with
            // parameters (`+json; charset=utf-8`), which the JSON format
            // defines by its media type stripped of parameters.
            if !text.contains("+json; charset") {
                let sdk: cloudevents::Event = serde_json::from_str(text).unwrap();
                assert_eq!(ours, sdk, "{text}");
            } else {
                assert_eq!(
                    ours.data(),
                    Some(&cloudevents::Data::Json(serde_json::json!({"n": 1})))
                );
            }
        }
        let attrs = Attributes::parse(cases[2].as_bytes()).unwrap();
        assert!(attrs.extensions.is_empty(), "`null` is absent");
        // Non-JSON data is a string: read raw (and by the global reader as
        // `Data::String`); a typed reader of `Plain` says it does not fit.
        let text = r#"{"specversion":"1.0","id":"1","type":"codec.plain","source":"/s","datacontenttype":"text/plain","data":"{\"n\":1}"}"#;
        assert!(parse_typed::<Plain, _>(text.as_bytes(), |_| false).is_ok());
        assert_eq!(
            decode_cloudevent(text.as_bytes()).unwrap().data(),
            Some(&cloudevents::Data::String(r#"{"n":1}"#.into()))
        );
        let why = decode::<Plain>(text.as_bytes()).unwrap_err().to_string();
        assert!(
            why.contains("data of `codec.plain` does not fit Plain: data: invalid type: string"),
            "{why}"
        );
    }

    /// Binary data: the global reader gets the bytes, a typed one a reason.
    #[test]
    fn binary_data_reaches_the_global_reader_and_a_typed_one_gets_a_reason() {
        let text = r#"{"specversion":"1.0","id":"b-1","type":"codec.plain","source":"/s","datacontenttype":"application/octet-stream","data_base64":"AAEC/w=="}"#;
        let event = decode_cloudevent(text.as_bytes()).unwrap();
        assert_eq!(
            event.data(),
            Some(&cloudevents::Data::Binary(vec![0, 1, 2, 255]))
        );
        let sdk: cloudevents::Event = serde_json::from_str(text).unwrap();
        assert_eq!(event, sdk);
        let attrs = Attributes::parse(text.as_bytes()).unwrap();
        assert_eq!(attrs.binary_data(), Some(vec![0, 1, 2, 255]));
        let err = parse_typed::<Plain, _>(text.as_bytes(), |_| true).unwrap_err();
        assert!(
            err.to_string().contains("event `codec.plain` carries binary data (`data_base64`, content type `application/octet-stream`), which a typed handler cannot read as JSON"),
            "{err}"
        );
        assert_eq!(err.event_type(), Some("codec.plain"));
        assert_eq!(err.event_id(), Some("b-1"));
        // JSON bytes with a JSON content type: JSON for the global reader, as the SDK does.
        let json = r#"{"specversion":"1.0","id":"b-2","type":"codec.plain","source":"/s","datacontenttype":"application/json","data_base64":"eyJuIjoxfQ=="}"#;
        let event = decode_cloudevent(json.as_bytes()).unwrap();
        assert_eq!(
            event.data(),
            Some(&cloudevents::Data::Json(serde_json::json!({"n": 1})))
        );
        assert_eq!(
            event,
            serde_json::from_str::<cloudevents::Event>(json).unwrap()
        );
    }

    /// CloudEvents 0.3 is read as 1.0 by every reader.
    #[test]
    fn cloudevents_0_3_is_read_as_1_0() {
        use cloudevents::AttributesReader;
        let v03 = r#"{"specversion":"0.3","id":"o-1","type":"codec.plain","source":"/old","schemaurl":"https://example.com/plain.json","datacontenttype":"application/json","time":"2026-11-27T11:01:30Z","data":{"n":3}}"#;
        let attrs = Attributes::parse(v03.as_bytes()).unwrap();
        assert_eq!(attrs.specversion, "1.0");
        assert_eq!(
            attrs.dataschema.as_deref(),
            Some("https://example.com/plain.json")
        );
        assert!(attrs.extensions.is_empty(), "{:?}", attrs.extensions);
        assert_eq!(decode::<Plain>(v03.as_bytes()).unwrap(), Plain { n: 3 });
        let event = decode_cloudevent(v03.as_bytes()).unwrap();
        assert_eq!(event.specversion(), cloudevents::event::SpecVersion::V10);
        assert_eq!(
            event.dataschema().map(|u| u.as_str()),
            Some("https://example.com/plain.json")
        );
        assert_eq!(
            event.data(),
            Some(&cloudevents::Data::Json(serde_json::json!({"n": 3})))
        );
        // base64 data: binary for a global reader, JSON bytes as JSON.
        let b64 = r#"{"specversion":"0.3","id":"o-2","type":"codec.plain","source":"/old","datacontentencoding":"Base64","datacontenttype":"application/json","data":"eyJuIjozfQ=="}"#;
        let event = decode_cloudevent(b64.as_bytes()).unwrap();
        assert_eq!(
            event.data(),
            Some(&cloudevents::Data::Json(serde_json::json!({"n": 3})))
        );
        let sdk: cloudevents::Event = serde_json::from_str(b64).unwrap();
        assert_eq!(event.data(), sdk.data(), "as cloudevents-sdk reads it");
        let attrs = Attributes::parse(b64.as_bytes()).unwrap();
        assert_eq!(attrs.data_base64.as_deref(), Some("eyJuIjozfQ=="));
        assert!(attrs.data.is_none());
        assert!(
            parse_typed::<Plain, _>(b64.as_bytes(), |_| true)
                .unwrap_err()
                .to_string()
                .contains("carries binary data")
        );
        // `datacontentencoding` after `data`, `specversion` last: the same.
        let late = r#"{"id":"o-3","type":"codec.plain","source":"/old","data":"eyJuIjozfQ==","datacontentencoding":"base64","specversion":"0.3"}"#;
        assert!(
            parse_typed::<Plain, _>(late.as_bytes(), |_| true)
                .unwrap_err()
                .to_string()
                .contains("carries binary data")
        );
        assert!(
            Attributes::parse(late.as_bytes())
                .unwrap()
                .data_base64
                .is_some()
        );
        // What the Python SDK's 1.x API writes for bytes in a 0.3 event.
        let py = r#"{"specversion": "0.3", "id": "o-4", "source": "/py", "type": "codec.plain", "data_base64": "AAEC/w=="}"#;
        let event = decode_cloudevent(py.as_bytes()).unwrap();
        assert_eq!(
            event.data(),
            Some(&cloudevents::Data::Binary(vec![0, 1, 2, 255]))
        );
    }

    /// What the fast reader takes, the validator would: a message in our
    /// own layout that breaks a rule goes to the general reader, which
    /// rejects it.
    #[test]
    fn the_fast_reader_takes_only_valid_events() {
        let good = String::from_utf8(
            encoded(
                &Note {
                    key: "Café".into(),
                    text: "t".into(),
                },
                "svc",
            )
            .to_vec(),
        )
        .unwrap();
        assert!(
            own_layout(&good).is_some(),
            "non-ASCII subject on the fast path"
        );
        let time_at = good.find(r#""time":""#).unwrap() + 8;
        let bad_time = format!(
            "{}2026-02-30T00:00:00.000000Z{}",
            &good[..time_at],
            &good[time_at + 27..]
        );
        let cases = [
            (
                good.replacen(r#""source":"/svc""#, r#""source":"""#, 1),
                "attribute `source` is empty",
            ),
            (good.replacen("Café", "Caf\u{85}", 1), "U+0085"),
            (good.replacen("Café", "Caf\u{fffe}", 1), "U+FFFE"),
            (good.replacen("Café", "Caf\u{7f}", 1), "U+007F"),
            (bad_time, "2026-02-30 is not a date"),
        ];
        for (text, expected) in &cases {
            assert!(own_layout(text).is_none(), "{text}");
            let err = decode::<Note>(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn plain_ascii_agrees_with_the_stop_table() {
        for len in 0..40 {
            let base = vec![b'a'; len];
            assert!(plain_ascii(&base));
            for at in 0..len {
                for c in 0..=255u8 {
                    let mut b = base.clone();
                    b[at] = c;
                    assert_eq!(
                        plain_ascii(&b),
                        !STOP[usize::from(c)],
                        "{c:#x} at {at} of {len}"
                    );
                }
            }
        }
    }

    /// The bus never writes what its readers refuse: an empty subject is
    /// left out, a forbidden character in the subject, the type or the
    /// source is an error at publish.
    #[test]
    fn encode_writes_only_valid_events() {
        let with_subject = |key: &str| {
            let note = Note {
                key: key.into(),
                text: "t".into(),
            };
            let now = SystemTime::now();
            let mut time = [0u8; 27];
            Rfc3339(now).write(&mut time);
            let stamp = Stamp {
                id: new_event_id(now),
                source: "svc",
                time: &time,
                trace: None,
            };
            encode(&note, stamp)
        };
        let empty = with_subject("").unwrap();
        assert!(!std::str::from_utf8(&empty).unwrap().contains("subject"));
        assert!(Attributes::parse(&empty).is_ok());
        for ok in ["k-1", "Café", "quote \" and \\"] {
            let bytes = with_subject(ok).unwrap();
            assert_eq!(
                Attributes::parse(&bytes).unwrap().subject.as_deref(),
                Some(ok)
            );
        }
        for (bad, why) in [
            ("a\nb", "U+000A"),
            ("\u{85}", "U+0085"),
            ("\u{fffe}", "U+FFFE"),
        ] {
            let err = with_subject(bad).unwrap_err().to_string();
            assert!(err.contains("attribute `subject` contains"), "{err}");
            assert!(err.contains(why), "{err}");
        }
        let now = SystemTime::now();
        let time = [b'0'; 27];
        let stamp = |source| Stamp {
            id: new_event_id(now),
            source,
            time: &time,
            trace: None,
        };
        let err = encode(&Plain { n: 1 }, stamp("svc\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("attribute `source` contains the control character U+000A"),
            "{err}"
        );
    }

    /// Reasons name the field of the handler's type, and stay short when
    /// the data is huge.
    #[test]
    fn data_reasons_name_the_field_and_stay_short() {
        let big = "y".repeat(1 << 20);
        let text = format!(
            r#"{{"specversion":"1.0","id":"d-1","type":"codec.plain","source":"/s","data":{{"n":"{big}"}}}}"#
        );
        let err = decode::<Plain>(text.as_bytes()).unwrap_err();
        let why = err.to_string();
        assert!(
            why.starts_with(
                "data of `codec.plain` does not fit Plain: data.n: invalid type: string \"yyy"
            ),
            "{}",
            &why[..200]
        );
        assert!(why.contains("expected u32"), "{why}");
        assert!(why.chars().count() <= MAX_REASON, "{}", why.len());
        assert_eq!(err.event_id(), Some("d-1"));
        let wrong = format!(
            r#"{{"specversion":"1.0","id":"d-2","type":"{big}","source":"/s","data":{{}}}}"#
        );
        let why = decode::<Plain>(wrong.as_bytes()).unwrap_err().to_string();
        assert!(
            why.starts_with("expected an event of type `codec.plain`, got `yyyy"),
            "{why}"
        );
        assert!(why.len() < 200, "{why}");
        assert!(
            DecodeError::new(None, big.clone())
                .to_string()
                .chars()
                .count()
                <= MAX_REASON
        );
        assert_eq!(DecodeError::new(None, "a\nb").to_string(), r"a\nb");
    }
}
