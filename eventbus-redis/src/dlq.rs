//! The dead-letter queue: one stream, `{P}:dlq`, listed, replayed to the
//! group that gave up, deleted or purged.
//!
//! Each entry's fields: `type`, `id` (the original stream entry id),
//! `stream` (the stream or channel it came from), `group`, `handler`,
//! `attempts`, `error`, `time` (RFC 3339), `payload` (the CloudEvent JSON).

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use bytes::Bytes;
use redis::Value;

use crate::client::Client;
use crate::codec;
use crate::config::Mode;
use crate::error::{Error, Result};
use crate::scripts;
use crate::streams::{entries_of, for_each_field};

/// The id of a dead letter (its entry id in the DLQ stream, `ms-seq`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DlqId(pub(crate) String);

impl DlqId {
    /// The id as Redis writes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DlqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DlqId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let ok = s
            .split_once('-')
            .is_some_and(|(a, b)| a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok());
        if ok {
            Ok(DlqId(s.to_owned()))
        } else {
            Err(Error::InvalidName {
                what: "dead-letter id",
                value: s.to_owned(),
                reason: "expected a stream id like `1700000000000-0`",
            })
        }
    }
}

/// One dead-lettered event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id in the DLQ.
    pub id: DlqId,
    /// The CloudEvents type.
    pub event_type: String,
    /// The original entry id in its stream (a sequence number for pub/sub).
    pub entry_id: String,
    /// The stream (or pub/sub channel) it came from.
    pub stream: String,
    /// The consumer group that gave up.
    pub group: String,
    /// The handler that gave up.
    pub handler: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// When it was dead-lettered.
    pub time: Option<SystemTime>,
    /// The CloudEvent JSON.
    pub payload: Bytes,
}

impl Client {
    /// The oldest `limit` dead letters.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let reply: Value = self
            .run(
                "XRANGE",
                redis::cmd("XRANGE")
                    .arg(self.keys().dlq())
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit),
            )
            .await?;
        Ok(parse_dead_letters(reply))
    }

    /// One dead letter by id.
    pub async fn dead_letter(&self, id: &DlqId) -> Result<Option<DeadLetter>> {
        let reply: Value = self
            .run(
                "XRANGE",
                redis::cmd("XRANGE")
                    .arg(self.keys().dlq())
                    .arg(id.as_str())
                    .arg(id.as_str()),
            )
            .await?;
        Ok(parse_dead_letters(reply).into_iter().next())
    }

    /// Number of dead letters.
    pub async fn dead_letter_count(&self) -> Result<u64> {
        self.run("XLEN", redis::cmd("XLEN").arg(self.keys().dlq()))
            .await
    }

    /// Re-delivers one dead letter to the group that dead-lettered it (and
    /// only to it) and removes it from the DLQ, atomically. Streams: it goes
    /// to the group's replay stream `{P}:replay:<group>`, which that group's
    /// consumers read along with their event streams. Pub/sub: it is
    /// published again on its channel (every subscriber gets it).
    ///
    /// Returns the group, or `None` when the id is not in the DLQ.
    pub async fn replay(&self, id: &DlqId) -> Result<Option<String>> {
        if self.config().mode() == Mode::PubSub {
            let Some(dl) = self.dead_letter(id).await? else {
                return Ok(None);
            };
            self.publish_one(&dl.event_type, &dl.payload).await?;
            self.delete_dead_letter(id).await?;
            return Ok(Some(dl.group));
        }
        let mut inv = scripts::REPLAY.prepare_invoke();
        inv.key(self.keys().dlq())
            .arg(id.as_str())
            .arg(self.keys().base());
        let group: Option<String> = self.run_script("replay script", &inv).await?;
        if let Some(g) = &group {
            tracing::info!(dlq_id = %id, group = %g, "dead letter replayed");
        }
        Ok(group)
    }

    /// Deletes one dead letter. Returns whether it existed.
    pub async fn delete_dead_letter(&self, id: &DlqId) -> Result<bool> {
        let n: u64 = self
            .run(
                "XDEL",
                redis::cmd("XDEL").arg(self.keys().dlq()).arg(id.as_str()),
            )
            .await?;
        Ok(n > 0)
    }

    /// Deletes every dead letter. Returns how many there were.
    pub async fn purge_dead_letters(&self) -> Result<u64> {
        let key = self.keys().dlq();
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN").arg(&key).cmd("DEL").arg(&key).ignore();
        let (n,): (u64,) = self.run_pipe("DEL", &pipe).await?;
        Ok(n)
    }
}

fn parse_dead_letters(reply: Value) -> Vec<DeadLetter> {
    entries_of(reply)
        .into_iter()
        .map(|(id, fields)| {
            let mut dl = DeadLetter {
                id: DlqId(String::from_utf8_lossy(&id).into_owned()),
                event_type: String::new(),
                entry_id: String::new(),
                stream: String::new(),
                group: String::new(),
                handler: String::new(),
                attempts: 0,
                error: String::new(),
                time: None,
                payload: Bytes::new(),
            };
            for_each_field(fields, |name, value| {
                let text = || String::from_utf8_lossy(&value).into_owned();
                match name {
                    b"type" => dl.event_type = text(),
                    b"id" => dl.entry_id = text(),
                    b"stream" => dl.stream = text(),
                    b"group" => dl.group = text(),
                    b"handler" => dl.handler = text(),
                    b"attempts" => dl.attempts = text().parse().unwrap_or(0),
                    b"error" => dl.error = text(),
                    b"time" => dl.time = codec::parse_time(&text()),
                    b"payload" => dl.payload = Bytes::from(value),
                    _ => {}
                }
            });
            dl
        })
        .collect()
}
