//! The key layout: every key this crate writes, in one place.
//!
//! All keys of one configuration share one cluster hash tag, so every
//! multi-key operation (Lua scripts, multi-stream `XREADGROUP`, pipelined
//! acks) touches a single hash slot and runs unchanged on Redis Cluster:
//!
//! | key | type | what |
//! |---|---|---|
//! | `{P}:stream:<type>` | stream | the events of one type (per-type layout) |
//! | `<stream>` (e.g. `events`) | stream | every event (django layout) |
//! | `{P}:types` | set | every type ever published (a hint for global consumers, which also scan for `{P}:stream:*`) |
//! | `{P}:retry:<group>` | zset | entries waiting for a delayed retry, score = due ms |
//! | `{P}:replay:<group>` | stream | dead letters replayed to one group |
//! | `{P}:dlq` | stream | dead letters |
//! | `{P}:schedule` | zset | events published for later, score = due ms |
//! | `{P}:tick:<name>` | string | last claimed tick of a recurring schedule |
//! | `{P}:alive:<group>` | zset | the group's consumers, score = the time (server ms) until which each counts as alive |
//! | `{P}:lease:<group>` | string | the holder of a pub/sub group's lease (see [`lease`](crate::lease)) |
//!
//! `{P}` is `{prefix}` (default `{eventbus}`); in the django layout it is
//! `{<stream>}:<prefix>` so the auxiliary keys share the slot of the stream.
//!
//! The trade-off of one hash tag: a whole configuration lives on one cluster
//! shard. A cluster still helps (other prefixes, other data, replicas), and two
//! services that do not share events can use two prefixes to spread load.

use crate::config::{Layout, RedisConfig};
use crate::error::{Error, Result};

/// Key names derived from a [`RedisConfig`].
#[derive(Debug, Clone)]
pub struct Keys {
    base: String,
    stream_prefix: String,
    django_stream: Option<String>,
    channel_prefix: Option<String>,
}

impl Keys {
    /// The keys of `config`.
    pub fn new(config: &RedisConfig) -> Self {
        let (base, django_stream) = match config.layout() {
            Layout::PerType => (format!("{{{}}}", config.prefix()), None),
            Layout::Django { stream } => (
                format!("{{{stream}}}:{}", config.prefix()),
                Some(stream.clone()),
            ),
        };
        Keys {
            stream_prefix: format!("{base}:stream:"),
            base,
            django_stream,
            channel_prefix: config.channel_prefix().map(|p| format!("{p}:")),
        }
    }

    /// The common start of every key, with the hash tag (`{eventbus}`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The stream an event of type `ty` is written to.
    pub fn stream(&self, ty: &str) -> String {
        match &self.django_stream {
            Some(s) => s.clone(),
            None => format!("{}{ty}", self.stream_prefix),
        }
    }

    /// The django-layout stream, if that layout is configured.
    pub fn django_stream(&self) -> Option<&str> {
        self.django_stream.as_deref()
    }

    /// The event type of a per-type stream key (`{eventbus}:stream:x` → `x`).
    pub fn type_of_stream<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.stream_prefix)
    }

    /// The glob that matches every per-type stream key (`{eventbus}:stream:*`).
    pub fn stream_pattern(&self) -> String {
        format!("{}*", glob_escape(&self.stream_prefix))
    }

    /// The set of known event types.
    pub fn types(&self) -> String {
        format!("{}:types", self.base)
    }

    /// The hash of the last entry id `maxlen` trimming removed from each
    /// stream (read by the pull feed).
    pub fn trimmed(&self) -> String {
        format!("{}:trimmed", self.base)
    }

    /// The dead-letter stream.
    pub fn dlq(&self) -> String {
        format!("{}:dlq", self.base)
    }

    /// The sorted set of scheduled events.
    pub fn schedule(&self) -> String {
        format!("{}:schedule", self.base)
    }

    /// The sorted set of delayed retries of `group`.
    pub fn retry(&self, group: &str) -> String {
        format!("{}:retry:{group}", self.base)
    }

    /// The stream of dead letters replayed to `group`.
    pub fn replay(&self, group: &str) -> String {
        format!("{}:replay:{group}", self.base)
    }

    /// The liveness of `group`'s consumers: member = consumer name, score =
    /// the time (ms, the server's clock) until which it counts as alive.
    pub fn alive(&self, group: &str) -> String {
        format!("{}:alive:{group}", self.base)
    }

    /// The last claimed tick of the recurring schedule `name`.
    pub fn tick(&self, name: &str) -> String {
        format!("{}:tick:{name}", self.base)
    }

    /// The holder of the pub/sub group `group`'s lease.
    pub fn lease(&self, group: &str) -> String {
        format!("{}:lease:{group}", self.base)
    }

    /// The pub/sub channel of `ty`: `<prefix>:<type>`, or the bare type when
    /// the URL sets no `prefix`.
    pub fn channel(&self, ty: &str) -> String {
        match &self.channel_prefix {
            Some(p) => format!("{p}{ty}"),
            None => ty.to_owned(),
        }
    }

    /// The event type of a pub/sub channel.
    pub fn type_of_channel<'a>(&self, channel: &'a str) -> &'a str {
        match &self.channel_prefix {
            Some(p) => channel.strip_prefix(p.as_str()).unwrap_or(channel),
            None => channel,
        }
    }

    /// The pattern that matches every event channel (`<prefix>:*`, or `*`).
    pub fn channel_pattern(&self) -> String {
        match &self.channel_prefix {
            Some(p) => format!("{}*", glob_escape(p)),
            None => "*".to_owned(),
        }
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Checks that `value` can be used inside a key name or channel.
pub(crate) fn check_name(what: &'static str, value: &str) -> Result<()> {
    let reason = if value.is_empty() {
        "it must not be empty"
    } else if value.len() > 1024 {
        "it must be at most 1024 bytes long"
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "it must not contain spaces or control characters"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        what,
        value: value.to_owned(),
        reason,
    })
}

/// The Redis Cluster hash slot of `key` (CRC16/XMODEM of the hash tag, mod 16384).
pub fn hash_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    crc16(tagged.unwrap_or(bytes)) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_shares_one_slot() {
        let c = RedisConfig::from_url("redis://h").unwrap();
        let k = Keys::new(&c);
        let slot = hash_slot(&k.stream("review_created"));
        for key in [
            k.stream("x"),
            k.types(),
            k.dlq(),
            k.schedule(),
            k.retry("g"),
            k.replay("g{weird}"),
            k.tick("t"),
            k.alive("g"),
        ] {
            assert_eq!(hash_slot(&key), slot, "{key}");
        }
        assert_eq!(
            k.stream("review_created"),
            "{eventbus}:stream:review_created"
        );
        assert_eq!(k.type_of_stream("{eventbus}:stream:a:b"), Some("a:b"));
        assert_eq!(k.stream_pattern(), "{eventbus}:stream:*");
        assert_eq!(k.alive("g"), "{eventbus}:alive:g");

        let d = RedisConfig::from_url("redis://h?layout=django&stream=events").unwrap();
        let k = Keys::new(&d);
        assert_eq!(k.stream("anything"), "events");
        assert_eq!(hash_slot("events"), hash_slot(&k.dlq()));
        assert_eq!(k.dlq(), "{events}:eventbus:dlq");
    }

    #[test]
    fn known_slots() {
        // Values from the Redis Cluster specification / CLUSTER KEYSLOT.
        assert_eq!(hash_slot("123456789"), 12739);
        assert_eq!(hash_slot("{user1000}.following"), hash_slot("user1000"));
        assert_eq!(hash_slot("foo{}{bar}"), hash_slot("foo{}{bar}"));
    }

    #[test]
    fn channels() {
        let plain = Keys::new(&RedisConfig::from_url("redis://h?mode=pubsub").unwrap());
        assert_eq!(plain.channel("review_created"), "review_created");
        assert_eq!(plain.channel_pattern(), "*");
        let pre = Keys::new(&RedisConfig::from_url("redis://h?mode=pubsub&prefix=svc").unwrap());
        assert_eq!(pre.channel("review_created"), "svc:review_created");
        assert_eq!(pre.type_of_channel("svc:review_created"), "review_created");
        assert_eq!(pre.channel_pattern(), "svc:*");
    }
}
