//! What a subscription is, as stored and as the API shows it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::filter::Filter;

/// The HTTP method of deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// `POST` (the default).
    #[default]
    Post,
    /// `PUT` (django-pubsubpull's callbacks).
    Put,
}

/// How the event is put into the delivery request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ContentMode {
    /// The whole event as `application/cloudevents+json` (the default).
    #[default]
    Structured,
    /// Attributes in `ce-*` headers, `data` as the body.
    Binary,
}

impl From<ContentMode> for crate::Mode {
    fn from(mode: ContentMode) -> Self {
        match mode {
            ContentMode::Structured => crate::Mode::Structured,
            ContentMode::Binary => crate::Mode::Binary,
        }
    }
}

/// Where a subscription is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Status {
    /// Waiting for the sink to confirm the subscription (the verification
    /// of intent); nothing is delivered yet, but events are kept for it.
    Pending,
    /// Delivering.
    Active,
    /// The sink refused the verification.
    Refused {
        /// What the sink answered.
        reason: String,
    },
    /// No more deliveries: the sink answered `410 Gone`, kept failing, or
    /// its lease ran out.
    Disabled {
        /// Why.
        reason: String,
        /// When (Unix ms).
        at_ms: u64,
    },
}

/// A signing secret, and until when it still signs (rotation).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningSecret {
    /// `whsec_...`.
    pub secret: String,
    /// Unix ms after which it no longer signs (`None`: the current one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSecret")
            .field("secret", &"***")
            .field("until_ms", &self.until_ms)
            .finish()
    }
}

/// The WebSub side of a subscription made with `hub.mode=subscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebSub {
    /// `hub.topic`.
    pub topic: String,
    /// When the lease ends (Unix ms).
    pub lease_until_ms: u64,
}

/// A webhook subscription, as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Its id (a UUIDv7).
    pub id: String,
    /// The sink URL deliveries go to.
    pub sink: String,
    /// `POST` or `PUT`.
    #[serde(default)]
    pub method: Method,
    /// Binary or structured.
    #[serde(default)]
    pub mode: ContentMode,
    /// Event types delivered (any of them; empty: every type the filters pass).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Filters, all of which must pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A bearer token sent to the sink (write-only in the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Standard Webhooks signing secrets, the current one first.
    #[serde(default)]
    pub secrets: Vec<SigningSecret>,
    /// An ed25519 signing key (`whsk_...`): deliveries also carry a `v1a`
    /// signature, checked with its public key (`whpk_...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ed25519_key: Option<String>,
    /// WebSub's `hub.secret` (`X-Hub-Signature`), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_secret: Option<String>,
    /// Set for a WebSub subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websub: Option<WebSub>,
    /// At most this many requests a minute (the sink's `WebHook-Allowed-Rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_minute: Option<u32>,
    /// Where it is.
    pub status: Status,
    /// When it was created (Unix ms).
    pub created_ms: u64,
    /// The last successful delivery (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<u64>,
    /// Since when every delivery failed (Unix ms), `None` after a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("sink", &eventbus_core::transport::redact(&self.sink))
            .field("method", &self.method)
            .field("mode", &self.mode)
            .field("types", &self.types)
            .field("filters", &self.filters)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Whether deliveries to `other` are made exactly as to this one (the
    /// bookkeeping of successes and failures aside): a worker keeps going
    /// across such changes.
    pub fn delivers_like(&self, other: &Subscription) -> bool {
        let strip = |s: &Subscription| Subscription {
            last_success_ms: None,
            failing_since_ms: None,
            ..s.clone()
        };
        strip(self) == strip(other)
    }

    /// The consumer group of its delivery queue.
    pub fn group(&self) -> String {
        format!("webhook.{}", self.id)
    }

    /// Whether `event` is for this subscription.
    pub fn wants(&self, event: &eventbus_core::Envelope) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event.event_type()))
            && self.filters.iter().all(|f| f.matches_event(event))
    }

    /// The types its queue has to carry (`None`: every type).
    pub fn topics(&self) -> eventbus_core::transport::Topics {
        use eventbus_core::transport::Topics;
        if !self.types.is_empty() {
            return Topics::Types(self.types.clone());
        }
        match self.filters.iter().find_map(Filter::exact_types) {
            Some(types) => Topics::Types(types),
            None => Topics::All,
        }
    }

    /// The secrets that sign now (the current one, and rotated-out ones
    /// still in their grace period).
    pub fn signing_secrets(&self, now_ms: u64) -> impl Iterator<Item = &str> {
        self.secrets
            .iter()
            .filter(move |s| s.until_ms.is_none_or(|until| until > now_ms))
            .map(|s| s.secret.as_str())
    }

    /// What the API shows: everything but the credential and the secrets.
    pub fn view(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": self.id,
            "sink": self.sink,
            "protocol": "HTTP",
            "protocolsettings": {
                "method": self.method,
                "headers": self.headers,
            },
            "config": { "mode": self.mode },
            "status": self.status,
            "created": crate::webhooks::rfc3339_ms(self.created_ms),
        });
        if !self.types.is_empty() {
            v["types"] = serde_json::json!(self.types);
        }
        if !self.filters.is_empty() {
            v["filters"] = serde_json::json!(self.filters);
        }
        if let Some(ws) = &self.websub {
            v["websub"] = serde_json::json!({
                "topic": ws.topic,
                "lease_until": crate::webhooks::rfc3339_ms(ws.lease_until_ms),
            });
        }
        if let Some(key) = self
            .ed25519_key
            .as_deref()
            .and_then(|k| k.parse::<crate::signature::SigningKey>().ok())
        {
            v["config"]["public_key"] = key.public_key().to_string().into();
        }
        if let Some(rate) = self.rate_per_minute {
            v["config"]["rate_per_minute"] = rate.into();
        }
        if let Some(t) = self.last_success_ms {
            v["last_success"] = crate::webhooks::rfc3339_ms(t).into();
        }
        if let Some(t) = self.failing_since_ms {
            v["failing_since"] = crate::webhooks::rfc3339_ms(t).into();
        }
        v
    }
}

/// One delivery attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The CloudEvents id (the `webhook-id`).
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When it was made (Unix ms).
    pub at_ms: u64,
    /// The response status, if one came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How long it took (ms).
    pub duration_ms: u64,
    /// The response body (at most 20 kB) or the error.
    pub response: String,
    /// What came of it.
    pub outcome: Outcome,
    /// When the next attempt is due (Unix ms), if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_ms: Option<u64>,
}

/// What came of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 2xx: delivered.
    Delivered,
    /// It failed and will be tried again.
    Retrying,
    /// It failed for the last time: dead-lettered.
    DeadLettered,
    /// `410 Gone`: the subscription is disabled.
    Gone,
}
