//! The dead-letter queue: one stream, `{P}:dlq`, listed, replayed to the
//! group that gave up, deleted or purged.
//!
//! Each entry's fields: `type`, `id` (the original stream entry id),
//! `event_id` (the CloudEvents id, when the message could be read),
//! `stream` (the stream or channel it came from), `group`, `handler`,
//! `attempts`, `error`, `time` (RFC 3339), `payload` (the message as
//! received: on pub/sub the bytes of the `PUBLISH`, bare JSON or not JSON at
//! all included, never the CloudEvent a bare payload was wrapped into).
//! Listed as eventbus-core's [`DeadLetter`]s.

use std::time::SystemTime;

use bytes::Bytes;
use eventbus_core::transport::{DeadLetter, DeadLetterInfo};
use redis::Value;

use crate::client::Client;
use crate::codec;
use crate::config::Mode;
use crate::error::{Error, Result};
use crate::scripts;
use crate::streams::{entries_of, for_each_field};

/// Checks that `id` looks like a DLQ entry id (`ms-seq`).
fn check_id(id: &str) -> Result<()> {
    let ok = id
        .split_once('-')
        .is_some_and(|(a, b)| a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what: "dead-letter id",
            value: id.chars().take(64).collect(),
            reason: "expected a stream id like `1700000000000-0`",
        })
    }
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
    pub async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>> {
        check_id(id)?;
        let reply: Value = self
            .run(
                "XRANGE",
                redis::cmd("XRANGE").arg(self.keys().dlq()).arg(id).arg(id),
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
    /// consumers read along with their event streams. Pub/sub: the message
    /// as received is published again on the channel it came from (every
    /// subscriber gets it): a bare JSON message byte for byte, a CloudEvent
    /// as it was unless the channel's codec is bare JSON (then only its
    /// `data`, as a publish would write it).
    ///
    /// Returns the group, or `None` when the id is not in the DLQ.
    pub async fn replay(&self, id: &str) -> Result<Option<String>> {
        check_id(id)?;
        if self.config().mode() == Mode::PubSub {
            let Some(dl) = self.dead_letter(id).await? else {
                return Ok(None);
            };
            let channel = match (&dl.origin, &dl.event_type) {
                (Some(channel), _) => channel.clone(),
                (None, Some(ty)) => self.keys().channel(ty),
                (None, None) => {
                    return Err(Error::Unsupported(format!(
                        "dead letter {id} names neither its channel nor its type; it cannot be replayed"
                    )));
                }
            };
            let ty = self.keys().type_of_channel(&channel);
            let payload = if self.publishes_bare(ty) && codec::is_structured(&dl.payload) {
                codec::legacy_data(&dl.payload)
            } else {
                std::borrow::Cow::Borrowed(&dl.payload[..])
            };
            self.run::<u64>(
                "PUBLISH",
                redis::cmd("PUBLISH").arg(&channel).arg(&*payload),
            )
            .await?;
            self.delete_dead_letter(id).await?;
            tracing::info!(dlq_id = %id, group = %dl.group, channel = %eventbus_core::escape::Escaped(&channel), "dead letter replayed");
            return Ok(Some(dl.group));
        }
        let mut inv = scripts::REPLAY.prepare_invoke();
        inv.key(self.keys().dlq()).arg(id).arg(self.keys().base());
        let group: Option<String> = self.run_script("replay script", &inv).await?;
        if let Some(g) = &group {
            tracing::info!(dlq_id = %id, group = %g, "dead letter replayed");
        }
        Ok(group)
    }

    /// Deletes one dead letter. Returns whether it existed.
    pub async fn delete_dead_letter(&self, id: &str) -> Result<bool> {
        check_id(id)?;
        let n: u64 = self
            .run("XDEL", redis::cmd("XDEL").arg(self.keys().dlq()).arg(id))
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
            let mut info = DeadLetterInfo::new(String::new(), 0, String::new());
            let (mut group, mut origin, mut time) = (String::new(), None, None);
            let mut payload = Bytes::new();
            for_each_field(fields, |name, value| {
                let text = || String::from_utf8_lossy(&value).into_owned();
                match name {
                    b"type" => info.event_type = text(),
                    b"event_id" if !value.is_empty() => info.event_id = Some(text()),
                    b"stream" => origin = Some(text()),
                    b"group" => group = text(),
                    b"handler" => info.handler = text(),
                    b"attempts" => info.attempts = text().parse().unwrap_or(0),
                    b"error" => info.error = text(),
                    b"time" => time = codec::parse_time(&text()),
                    b"payload" => payload = Bytes::from(value),
                    _ => {}
                }
            });
            let id = String::from_utf8_lossy(&id).into_owned();
            let mut dl = DeadLetter::new(
                id,
                group,
                info,
                time.unwrap_or(SystemTime::UNIX_EPOCH),
                payload,
            );
            dl.origin = origin;
            dl
        })
        .collect()
}
