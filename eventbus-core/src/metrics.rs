//! The names of every metric eventbus records, in one list ([`METRICS`]).
//!
//! The crates record through the `metrics` facade using these constants
//! only, and the table in `eventbus/METRICS.md` is generated from the list
//! ([`markdown_table`]), so the names in the code and in the docs are the
//! same. Names follow the OpenTelemetry messaging semantic conventions where
//! one exists (`messaging.*`); the others are eventbus's own (`eventbus.*`).
//! A Prometheus exporter writes the dots as underscores.

/// What kind of instrument a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// A sampled value.
    Gauge,
    /// A distribution of values.
    Histogram,
}

impl MetricKind {
    /// `counter`, `gauge` or `histogram`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One metric: its name, kind, unit (UCUM, as OpenTelemetry), labels and meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDoc {
    /// The metric's name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// `s`, `{message}`, `{row}`, `{attempt}`.
    pub unit: &'static str,
    /// The label keys it is recorded with.
    pub labels: &'static [&'static str],
    /// What it counts or measures.
    pub description: &'static str,
}

/// Messages published (accepted by the transport).
pub const SENT_MESSAGES: MetricDoc = MetricDoc {
    name: "messaging.client.sent.messages",
    kind: MetricKind::Counter,
    unit: "{message}",
    labels: &["type", "transport"],
    description: "Messages the transport accepted from a publish (typed, batch, encoded, or the outbox relay's).",
};

/// Messages handed to a worker.
pub const CONSUMED_MESSAGES: MetricDoc = MetricDoc {
    name: "messaging.client.consumed.messages",
    kind: MetricKind::Counter,
    unit: "{message}",
    labels: &["type", "group", "transport"],
    description: "Deliveries a worker read from the transport (redeliveries and retries included).",
};

/// How long a handler ran.
pub const PROCESS_DURATION: MetricDoc = MetricDoc {
    name: "messaging.process.duration",
    kind: MetricKind::Histogram,
    unit: "s",
    labels: &["type", "group", "outcome"],
    description: "Run time of one handler attempt; `outcome` is `ok` or `error`.",
};

/// Failed attempts given back for a retry.
pub const RETRIES: MetricDoc = MetricDoc {
    name: "eventbus.handler.retries",
    kind: MetricKind::Counter,
    unit: "{attempt}",
    labels: &["type", "group"],
    description: "Failed handler attempts scheduled to be retried.",
};

/// Deliveries moved to the dead-letter queue.
pub const DEAD_LETTERED: MetricDoc = MetricDoc {
    name: "eventbus.dead_lettered.messages",
    kind: MetricKind::Counter,
    unit: "{message}",
    labels: &["type", "group"],
    description: "Deliveries moved to the dead-letter queue (out of attempts, undecodable, or delivered too often).",
};

/// Messages kept for a group and not yet delivered to it.
pub const CONSUMER_LAG: MetricDoc = MetricDoc {
    name: "eventbus.consumer.lag",
    kind: MetricKind::Gauge,
    unit: "{message}",
    labels: &["group", "transport"],
    description: "Messages kept for the group and not yet delivered to it (sampled; memory and Redis Streams).",
};

/// Messages delivered to a group and not yet settled.
pub const CONSUMER_PENDING: MetricDoc = MetricDoc {
    name: "eventbus.consumer.pending",
    kind: MetricKind::Gauge,
    unit: "{message}",
    labels: &["group", "transport"],
    description: "Messages delivered to the group and not yet acknowledged, retried or dead-lettered (sampled).",
};

/// Age of the oldest message a group has not settled.
pub const CONSUMER_OLDEST_PENDING_AGE: MetricDoc = MetricDoc {
    name: "eventbus.consumer.oldest_pending.age",
    kind: MetricKind::Gauge,
    unit: "s",
    labels: &["group", "transport"],
    description: "How long the oldest message kept for the group and not yet settled (waiting or being handled) has waited since it was published; 0 when there is none (sampled; memory and Redis Streams).",
};

/// Outbox rows waiting to be published.
pub const OUTBOX_PENDING: MetricDoc = MetricDoc {
    name: "eventbus.outbox.pending",
    kind: MetricKind::Gauge,
    unit: "{row}",
    labels: &[],
    description: "`pending` outbox rows (due, scheduled or in backoff), sampled by the relay.",
};

/// How long the most overdue outbox row has been due.
pub const OUTBOX_OLDEST_PENDING_AGE: MetricDoc = MetricDoc {
    name: "eventbus.outbox.oldest_pending.age",
    kind: MetricKind::Gauge,
    unit: "s",
    labels: &[],
    description: "How long the most overdue `pending` outbox row the relay could claim has been due; 0 when none is (sampled by the relay).",
};

/// Outbox rows that gave up.
pub const OUTBOX_FAILED: MetricDoc = MetricDoc {
    name: "eventbus.outbox.failed",
    kind: MetricKind::Gauge,
    unit: "{row}",
    labels: &[],
    description: "`failed` outbox rows (out of attempts), sampled by the relay.",
};

/// Age of the relay's last successful round.
pub const OUTBOX_LAST_ROUND_AGE: MetricDoc = MetricDoc {
    name: "eventbus.outbox.last_round.age",
    kind: MetricKind::Gauge,
    unit: "s",
    labels: &[],
    description: "Time since the relay last finished a round without an outage or error (sampled); `/readyz` fails while it is stuck.",
};

/// Webhook delivery attempts.
pub const WEBHOOK_ATTEMPTS: MetricDoc = MetricDoc {
    name: "eventbus.webhook.attempts",
    kind: MetricKind::Counter,
    unit: "{attempt}",
    labels: &["type", "outcome"],
    description: "Webhook delivery attempts; `outcome` is `delivered`, `retrying`, `dead_lettered` (the last attempt failed) or `gone` (410: the subscription is disabled).",
};

/// Every metric eventbus records.
pub const METRICS: &[MetricDoc] = &[
    SENT_MESSAGES,
    CONSUMED_MESSAGES,
    PROCESS_DURATION,
    RETRIES,
    DEAD_LETTERED,
    CONSUMER_LAG,
    CONSUMER_PENDING,
    CONSUMER_OLDEST_PENDING_AGE,
    OUTBOX_PENDING,
    OUTBOX_OLDEST_PENDING_AGE,
    OUTBOX_FAILED,
    OUTBOX_LAST_ROUND_AGE,
    WEBHOOK_ATTEMPTS,
];

/// The Markdown table of [`METRICS`] (the one in `eventbus/METRICS.md`).
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| name | kind | unit | labels | description |\n| --- | --- | --- | --- | --- |\n",
    );
    for m in METRICS {
        let labels = m
            .labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let labels = if labels.is_empty() {
            "none".to_owned()
        } else {
            labels
        };
        out.push_str(&format!(
            "| `{}` | {} | `{}` | {} | {} |\n",
            m.name,
            m.kind.as_str(),
            m.unit,
            labels,
            m.description.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_dotted() {
        let mut names: Vec<_> = METRICS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METRICS.len());
        for m in METRICS {
            assert!(
                m.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'),
                "{}",
                m.name
            );
        }
    }
}
