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
    /// An error about a message of type `event_type` (when it is known).
    pub fn new(event_type: Option<&str>, message: impl Into<String>) -> Self {
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
/// Extension attributes are kept as their undecoded JSON; a member that
/// appears twice is an error, never "the last one wins".
#[derive(Debug)]
#[non_exhaustive]
pub struct Attributes<'a> {
    /// `specversion`; always `1.0` once [`Attributes::parse`] returned it.
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
    /// `dataschema`.
    pub dataschema: Option<Cow<'a, str>>,
    /// Extension attributes: names and undecoded JSON values, in message order.
    pub extensions: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// `data`, undecoded.
    pub data: Option<&'a RawValue>,
}

/// The derive-based reading of the required attributes, used only to explain
/// why a message is not a CloudEvent (its errors name the missing or
/// mistyped member).
#[derive(Deserialize)]
#[allow(dead_code)]
struct Explain<'a> {
    #[serde(borrow)]
    specversion: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(borrow, default)]
    subject: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    datacontenttype: Option<Cow<'a, str>>,
}

impl<'a> Attributes<'a> {
    /// Reads the attributes of a structured-mode CloudEvent.
    ///
    /// Fails on anything that is not JSON, not a CloudEvent (no `id`, `type`
    /// or `source`, a member twice) or of a spec version other than 1.0.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Err(DecodeError::new(
                None,
                "message is not JSON: it is not valid UTF-8",
            ));
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let read = serde::de::DeserializeSeed::deserialize(
            TypedSeed::<serde::de::IgnoredAny, _> {
                direct: |_: &str| false,
                _t: std::marker::PhantomData,
            },
            &mut de,
        )
        .and_then(|v| de.end().map(|()| v));
        let attrs = match read {
            Ok(Some((attrs, _))) => attrs,
            Ok(None) => return Err(explain(bytes, None)),
            Err(e) => return Err(explain(bytes, Some(e))),
        };
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

/// Why `bytes` is not a structured CloudEvent: the error of the general
/// reader when it had one, otherwise the derive's (which names the missing
/// member).
#[cold]
fn explain(bytes: &[u8], err: Option<serde_json::Error>) -> DecodeError {
    let err = match (serde_json::from_slice::<Explain<'_>>(bytes), err) {
        (Err(e), None) => e,
        (Err(e), Some(first)) if first.is_data() && !e.is_data() => e,
        (_, Some(first)) => first,
        (Ok(_), None) => {
            return DecodeError::new(None, "message is not a CloudEvent");
        }
    };
    let what = if err.is_syntax() || err.is_eof() {
        "message is not JSON"
    } else {
        "message is not a CloudEvent"
    };
    DecodeError::new(None, format!("{what}: {err}"))
}

/// Reads a structured CloudEvent in one pass. When `direct(type)` is true
/// for the message's type (and `type` comes before `data`, as every SDK
/// writes it), `data` is decoded straight into `T` and the returned
/// attributes carry no `data`; otherwise `data` is kept raw and `T` is `None`.
///
/// Errors are produced by the slow, explaining path.
pub fn parse_typed<'a, T, F>(
    bytes: &'a [u8],
    direct: F,
) -> Result<(Attributes<'a>, Option<T>), DecodeError>
where
    T: serde::de::DeserializeOwned,
    F: Fn(&str) -> bool,
{
    // Validating UTF-8 once for the whole message is far cheaper than per string.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(DecodeError::new(
            None,
            "message is not JSON: it is not valid UTF-8",
        ));
    };
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
        // Data that does not fit: the paths below explain.
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let fast = serde::de::DeserializeSeed::deserialize(
        TypedSeed::<T, &F> {
            direct: &direct,
            _t: std::marker::PhantomData,
        },
        &mut de,
    )
    .and_then(|v| de.end().map(|()| v));
    match fast {
        Ok(Some((attrs, value))) if attrs.specversion == SPEC_VERSION => Ok((attrs, value)),
        _ => {
            // Explain: envelope problems first, then the data.
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

/// Reads a message laid out exactly as [`encode`] writes it — members in
/// that order, strings without escapes, nothing after the closing brace —
/// returning its attributes and the text of its `data` (not yet checked).
/// Anything else gives `None` and goes through the general parser.
///
/// A message accepted here is valid JSON once `data` is: the fixed parts are
/// compared byte for byte, and each string runs to its closing quote
/// without a backslash or a control character.
fn own_layout(text: &str) -> Option<(Attributes<'_>, &str)> {
    /// The contents of a JSON string up to its closing quote, and the rest.
    fn plain(s: &str) -> Option<(&str, &str)> {
        let end = s
            .bytes()
            .position(|c| c == b'"' || c == b'\\' || c < 0x20)?;
        (s.as_bytes()[end] == b'"').then(|| (&s[..end], &s[end + 1..]))
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
        extensions: Vec::new(),
        data: None,
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

struct TypedSeed<T, F> {
    direct: F,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<'de, T, F> serde::de::DeserializeSeed<'de> for TypedSeed<T, F>
where
    T: serde::de::DeserializeOwned,
    F: Fn(&str) -> bool,
{
    /// `None` when a required attribute is missing (the slow path explains).
    type Value = Option<(Attributes<'de>, Option<T>)>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T, F> serde::de::Visitor<'de> for TypedSeed<T, F>
where
    T: serde::de::DeserializeOwned,
    F: Fn(&str) -> bool,
{
    type Value = Option<(Attributes<'de>, Option<T>)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a structured CloudEvent")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut specversion, mut id, mut ty, mut source) = (None, None, None, None);
        let (mut subject, mut time, mut datacontenttype, mut dataschema) = (None, None, None, None);
        let mut extensions = Vec::new();
        let mut data: Option<&'de RawValue> = None;
        let mut value: Option<T> = None;
        let mut seen_data = false;
        /// Sets an attribute once; a second occurrence is an error.
        fn once<T, E: serde::de::Error>(slot: &mut Option<T>, v: T, name: &str) -> Result<(), E> {
            if slot.is_some() {
                return Err(E::custom(format_args!("duplicate attribute `{name}`")));
            }
            *slot = Some(v);
            Ok(())
        }
        while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
            match &*key {
                "specversion" => once(&mut specversion, map.next_value::<Str<'de>>()?.0, &key)?,
                "id" => once(&mut id, map.next_value::<Str<'de>>()?.0, &key)?,
                "type" => once(&mut ty, map.next_value::<Str<'de>>()?.0, &key)?,
                "source" => once(&mut source, map.next_value::<Str<'de>>()?.0, &key)?,
                "subject" => once(
                    &mut subject,
                    map.next_value::<Option<Str<'de>>>()?.map(|s| s.0),
                    &key,
                )?,
                "time" => once(
                    &mut time,
                    map.next_value::<Option<Str<'de>>>()?.map(|s| s.0),
                    &key,
                )?,
                "datacontenttype" => once(
                    &mut datacontenttype,
                    map.next_value::<Option<Str<'de>>>()?.map(|s| s.0),
                    &key,
                )?,
                "dataschema" => once(
                    &mut dataschema,
                    map.next_value::<Option<Str<'de>>>()?.map(|s| s.0),
                    &key,
                )?,
                "data" => {
                    if std::mem::replace(&mut seen_data, true) {
                        return Err(serde::de::Error::custom("duplicate attribute `data`"));
                    }
                    match &ty {
                        Some(t) if (self.direct)(t) => value = Some(map.next_value::<T>()?),
                        _ => data = Some(map.next_value::<&'de RawValue>()?),
                    }
                }
                "data_base64" => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                _ => {
                    let raw = map.next_value::<&'de RawValue>()?;
                    if extensions
                        .iter()
                        .any(|(k, _): &(Cow<'de, str>, _)| *k == key)
                    {
                        return Err(serde::de::Error::custom(format_args!(
                            "duplicate attribute `{key}`"
                        )));
                    }
                    extensions.push((key, raw));
                }
            }
        }
        let (Some(specversion), Some(id), Some(ty), Some(source)) = (specversion, id, ty, source)
        else {
            return Ok(None);
        };
        if value.is_none() && (self.direct)(&ty) {
            // `data` came before `type`, or is absent (decoded as `null`).
            let raw = data.take().unwrap_or(RawValue::NULL);
            value = Some(serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?);
        }
        let attrs = Attributes {
            specversion,
            id,
            ty,
            source,
            subject: subject.flatten(),
            time: time.flatten(),
            datacontenttype: datacontenttype.flatten(),
            dataschema: dataschema.flatten(),
            extensions,
            data,
        };
        Ok(Some((attrs, value)))
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
    s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
}

/// Writes `s` as a JSON string, escaping only when it has to.
fn put_str(buf: &mut Vec<u8>, s: &str) -> Result<(), serde_json::Error> {
    if plain(s) {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *buf, s)
    }
}

/// Writes `event` as structured-mode CloudEvents JSON: the same members in
/// the same order as cloudevents-sdk, attributes copied without an escaping
/// pass when they need none, `data` from the payload's own `Serialize`.
pub fn encode<E: Event>(event: &E, stamp: Stamp<'_>) -> Result<Bytes, serde_json::Error> {
    // Attributes take ~230 bytes; most payloads fit in the rest.
    let mut buf = Vec::with_capacity(512);
    buf.extend_from_slice(b"{\"specversion\":\"1.0\",\"id\":\"");
    let mut id_buf = uuid::Uuid::encode_buffer();
    buf.extend_from_slice(stamp.id.hyphenated().encode_lower(&mut id_buf).as_bytes());
    buf.extend_from_slice(b"\",\"type\":");
    put_str(&mut buf, E::TYPE)?;
    buf.extend_from_slice(b",\"source\":");
    if needs_slash(stamp.source) && plain(stamp.source) {
        buf.extend_from_slice(b"\"/");
        buf.extend_from_slice(stamp.source.as_bytes());
        buf.push(b'"');
    } else {
        put_str(&mut buf, &normalize_source(stamp.source))?;
    }
    buf.extend_from_slice(b",\"datacontenttype\":\"application/json\"");
    if let Some(subject) = event.subject() {
        buf.extend_from_slice(b",\"subject\":");
        serde_json::to_writer(&mut buf, &AsStr(subject))?;
    }
    buf.extend_from_slice(b",\"time\":\"");
    buf.extend_from_slice(stamp.time);
    buf.extend_from_slice(b"\",\"data\":");
    serde_json::to_writer(&mut buf, event)?;
    buf.push(b'}');
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
    let aliases = E::info().aliases;
    match parse_typed::<E, _>(bytes, |ty| ty == E::TYPE || aliases.contains(&ty))? {
        (_, Some(event)) => Ok(event),
        (attrs, None) => Err(DecodeError::new(
            Some(&attrs.ty),
            format!(
                "expected an event of type `{}`, got `{}`",
                E::TYPE,
                attrs.ty
            ),
        )),
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
        };
        encode(event, stamp).unwrap()
    }

    fn general<'a>(bytes: &'a [u8]) -> Attributes<'a> {
        Attributes::parse(bytes).unwrap()
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
}
