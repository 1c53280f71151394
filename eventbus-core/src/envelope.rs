//! [`Envelope`]: a message and its attributes, parsed once.
//!
//! The worker reads a delivery's attributes once, while it decodes the data
//! for the handler, and keeps them here next to the bytes. Everything that
//! needs a fact about the event afterwards — the handler's `Context`, the
//! tracing span, a retry, a dead letter — reads it from the envelope instead
//! of parsing the bytes again. Attribute values that appear unescaped in the
//! message are kept as positions in the shared buffer, so building an
//! envelope allocates nothing for a typical event; escaped values and
//! extensions are copied out.

use std::fmt;

use bytes::Bytes;
use cloudevents::event::ExtensionValue;

use crate::codec::Attributes;
use crate::trace::{TRACEPARENT, TRACESTATE, TraceContext, TraceParentError};

/// A string attribute: a range of the message when it appears there as it
/// is, or a copy when the JSON text escaped it.
#[derive(Clone)]
enum Text {
    At(u32, u32),
    Owned(Box<str>),
    /// A name the program knows (the handler's event type), equal to the
    /// message's text: read without checking the bytes again.
    Static(&'static str),
}

impl Text {
    fn new(payload: &Bytes, s: &str) -> Self {
        let base = payload.as_ptr() as usize;
        let at = s.as_ptr() as usize;
        match at.checked_sub(base) {
            Some(start)
                if start + s.len() <= payload.len() && start + s.len() <= u32::MAX as usize =>
            {
                Text::At(start as u32, (start + s.len()) as u32)
            }
            _ => Text::Owned(s.into()),
        }
    }

    fn get<'a>(&'a self, payload: &'a Bytes) -> &'a str {
        match self {
            Text::At(start, end) => payload
                .get(*start as usize..*end as usize)
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or(""),
            Text::Owned(s) => s,
            Text::Static(s) => s,
        }
    }
}

/// A structured CloudEvent as received, with its attributes read once.
///
/// Reading an attribute is a field access; none of the accessors parse or
/// panic.
#[derive(Clone)]
pub struct Envelope {
    payload: Bytes,
    id: Text,
    ty: Text,
    source: Text,
    subject: Option<Text>,
    time: Option<Text>,
    datacontenttype: Option<Text>,
    dataschema: Option<Text>,
    extensions: Vec<(Box<str>, ExtensionValue)>,
}

impl Envelope {
    /// The envelope of `payload`, whose attributes `attrs` were parsed from it.
    ///
    /// Values borrowed from `payload` are kept as positions in it; any other
    /// value (escaped in the JSON text, or from elsewhere) is copied.
    pub fn new(payload: Bytes, attrs: &Attributes<'_>) -> Self {
        let text = |s: &str| Text::new(&payload, s);
        let id = text(&attrs.id);
        let ty = text(&attrs.ty);
        let source = text(&attrs.source);
        let subject = attrs.subject.as_deref().map(text);
        let time = attrs.time.as_deref().map(text);
        let datacontenttype = attrs.datacontenttype.as_deref().map(text);
        let dataschema = attrs.dataschema.as_deref().map(text);
        let extensions = attrs
            .extensions
            .iter()
            .map(|(name, raw)| (Box::from(&**name), crate::codec::extension_value(raw.get())))
            .collect();
        Self {
            payload,
            id,
            ty,
            source,
            subject,
            time,
            datacontenttype,
            dataschema,
            extensions,
        }
    }

    /// Parses `payload` and builds its envelope (for callers that have not
    /// parsed it already).
    pub fn parse(payload: Bytes) -> Result<Self, crate::codec::DecodeError> {
        let attrs = Attributes::parse(&payload)?;
        // `attrs` borrows `payload`; the envelope keeps positions into a clone
        // of the same buffer.
        let envelope = Envelope::new(payload.clone(), &attrs);
        Ok(envelope)
    }

    /// When the event's `type` is `known` (the type a typed handler
    /// decoded it as), reads it from there from now on: [`Envelope::event_type`]
    /// is then a field access, not a check of the message's bytes.
    pub fn with_known_type(mut self, known: &'static str) -> Self {
        let same = match &self.ty {
            Text::At(start, end) => {
                self.payload.get(*start as usize..*end as usize) == Some(known.as_bytes())
            }
            Text::Owned(s) => &**s == known,
            Text::Static(s) => *s == known,
        };
        if same {
            self.ty = Text::Static(known);
        }
        self
    }

    /// The message exactly as received.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The CloudEvents `id`.
    pub fn id(&self) -> &str {
        self.id.get(&self.payload)
    }

    /// The CloudEvents `type` as it is in the message (an old name for an
    /// event decoded through an alias or `replaced_by`).
    pub fn event_type(&self) -> &str {
        self.ty.get(&self.payload)
    }

    /// The CloudEvents `source`.
    pub fn source(&self) -> &str {
        self.source.get(&self.payload)
    }

    /// The CloudEvents `subject`, if any.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_ref().map(|t| t.get(&self.payload))
    }

    /// The CloudEvents `time` as RFC 3339 text, if any.
    pub fn time(&self) -> Option<&str> {
        self.time.as_ref().map(|t| t.get(&self.payload))
    }

    /// The CloudEvents `datacontenttype`, if any.
    pub fn datacontenttype(&self) -> Option<&str> {
        self.datacontenttype.as_ref().map(|t| t.get(&self.payload))
    }

    /// The CloudEvents `dataschema`, if any.
    pub fn dataschema(&self) -> Option<&str> {
        self.dataschema.as_ref().map(|t| t.get(&self.payload))
    }

    /// The extension attribute `name` (e.g. `traceparent`), if the message has it.
    pub fn extension(&self, name: &str) -> Option<&ExtensionValue> {
        self.extensions
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v)
    }

    /// The event's trace context (the `traceparent` and `tracestate`
    /// extensions), if it has a valid one; a malformed `traceparent` is
    /// ignored (see [`try_trace_context`](Self::try_trace_context) for why).
    pub fn trace_context(&self) -> Option<TraceContext> {
        self.try_trace_context().ok().flatten()
    }

    /// The event's trace context: `None` without a `traceparent`, an error
    /// when it is malformed (or not a string).
    pub fn try_trace_context(&self) -> Result<Option<TraceContext>, TraceParentError> {
        let Some(parent) = self.extension(TRACEPARENT) else {
            return Ok(None);
        };
        let ExtensionValue::String(parent) = parent else {
            return Err(TraceParentError::new(&parent.to_string(), "not a string"));
        };
        let state = match self.extension(TRACESTATE) {
            Some(ExtensionValue::String(s)) => Some(s.as_str()),
            _ => None,
        };
        TraceContext::parse(parent, state).map(Some)
    }

    /// How many attribute values are copies rather than positions in the
    /// message (each one an allocation).
    #[cfg(test)]
    pub(crate) fn copies(&self) -> usize {
        let texts = [Some(&self.id), Some(&self.ty), Some(&self.source)]
            .into_iter()
            .chain(
                [
                    &self.subject,
                    &self.time,
                    &self.datacontenttype,
                    &self.dataschema,
                ]
                .map(Option::as_ref),
            );
        texts
            .flatten()
            .filter(|t| matches!(t, Text::Owned(_)))
            .count()
            + self.extensions.len()
    }

    /// Every extension attribute, in message order.
    pub fn extensions(&self) -> impl Iterator<Item = (&str, &ExtensionValue)> {
        self.extensions.iter().map(|(n, v)| (&**n, v))
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("id", &self.id())
            .field("type", &self.event_type())
            .field("source", &self.source())
            .field("subject", &self.subject())
            .field("time", &self.time())
            .field("extensions", &self.extensions)
            .field("bytes", &self.payload.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescaped_values_are_positions_escaped_ones_copies() {
        let payload = Bytes::from_static(
            br#"{"specversion":"1.0","id":"a-1","type":"t\"q","source":"/s","subject":"sub","traceparent":"00-abc","n":7,"data":{}}"#,
        );
        let env = Envelope::parse(payload).unwrap();
        assert!(matches!(env.id, Text::At(..)));
        assert!(matches!(env.ty, Text::Owned(..)));
        assert_eq!(env.id(), "a-1");
        assert_eq!(env.event_type(), "t\"q");
        assert_eq!(env.source(), "/s");
        assert_eq!(env.subject(), Some("sub"));
        assert_eq!(env.time(), None);
        assert_eq!(
            env.extension("traceparent"),
            Some(&ExtensionValue::String("00-abc".into()))
        );
        assert_eq!(env.extension("n"), Some(&ExtensionValue::Integer(7)));
        assert_eq!(env.extension("data"), None);
        let cloned = env.clone();
        assert_eq!(cloned.id(), "a-1");
    }

    #[test]
    fn a_known_type_is_read_from_the_program_only_when_it_is_the_same() {
        let payload = Bytes::from_static(
            br#"{"specversion":"1.0","id":"a-1","type":"review_created","source":"/s","data":{}}"#,
        );
        let env = Envelope::parse(payload.clone()).unwrap();
        let known = env.clone().with_known_type("review_created");
        assert!(matches!(known.ty, Text::Static("review_created")));
        assert_eq!(known.event_type(), "review_created");
        // An alias (the message names an old type): kept as it is.
        let other = env.with_known_type("review_approved");
        assert!(matches!(other.ty, Text::At(..)));
        assert_eq!(other.event_type(), "review_created");
    }
}
