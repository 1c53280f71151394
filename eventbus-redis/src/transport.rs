//! [`RedisTransport`]: eventbus-core's [`Transport`] on Redis Streams
//! (durable, default) and pub/sub (`?mode=pubsub`).
//!
//! A group is a Redis consumer group (or, in pub/sub mode, a set of channel
//! subscriptions whose instances compete through a [lease](crate::lease)),
//! a delivery id packs the stream entry id, and the delivery count Redis
//! keeps drives the attempts. See the crate README for the keys and the
//! guarantees per mode.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use eventbus_core::Result;
use eventbus_core::transport::{
    Capabilities, DeadLetter, DeadLetterInfo, Delivery, DeliveryId, GroupSpec, GroupStats,
    Outgoing, Subscriber, Topics, Transport,
};
use futures::future::BoxFuture;

use crate::lease::{self, Lease, LeaseOptions};
use crate::{Client, ConsumerOptions, Mode, RedisConfig, SchedulerOptions, StartFrom};

/// The Redis transport. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisTransport {
    client: Client,
    consumer: ConsumerOptions,
    name: &'static str,
    /// When each global group was first declared by this process: a global
    /// group reads the streams it finds from that moment on, so nothing
    /// published between `declare` and `subscribe` is missed.
    declared: Arc<std::sync::Mutex<std::collections::HashMap<String, SystemTime>>>,
    /// The reclaim idle time was chosen by the user (URL or options): keep it.
    claim_idle_explicit: bool,
    /// The lease of pub/sub groups.
    lease: LeaseOptions,
    /// The log read by position (Streams only).
    feed: Option<Arc<crate::feed::StreamFeed>>,
}

impl RedisTransport {
    /// Connects to the server(s) named by `url` (see `eventbus-redis` for
    /// every option). The entries of a dead instance are taken over within
    /// seconds by liveness (heartbeats, see [`ConsumerOptions`]);
    /// `claim_idle_ms` and `claim_interval_ms` tune the fallback for
    /// consumers without heartbeats (older versions).
    pub async fn connect(url: &str) -> Result<Self> {
        let config = RedisConfig::from_url(url)?;
        let consumer = config.consumer_options();
        let explicit = consumer.claim_idle != ConsumerOptions::default().claim_idle;
        let mut transport = Self::with_options(config, consumer).await?;
        transport.claim_idle_explicit = explicit;
        Ok(transport)
    }

    /// Connects with explicit consumer tuning (reclaim idle time, block time, ...).
    pub async fn with_options(config: RedisConfig, consumer: ConsumerOptions) -> Result<Self> {
        let name = match config.mode() {
            Mode::PubSub => "redis-pubsub",
            _ => "redis-streams",
        };
        let client = Client::connect(config).await?;
        let feed = (client.config().mode() != Mode::PubSub)
            .then(|| Arc::new(crate::feed::StreamFeed::new(client.clone())));
        Ok(Self {
            feed,
            client,
            consumer,
            name,
            declared: Default::default(),
            claim_idle_explicit: true,
            lease: LeaseOptions::default(),
        })
    }

    /// Pub/sub mode: how long a group's lease lasts and how often it is
    /// renewed, which bounds how soon a standby instance takes over the
    /// group's events from one that died (default 3 s + 1 s).
    pub fn with_lease_options(mut self, lease: LeaseOptions) -> Self {
        self.lease = lease;
        self
    }

    fn pubsub(&self) -> bool {
        self.client.config().mode() == Mode::PubSub
    }

    /// The binding's client, for what the transport does not expose.
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn consumer(&self, group: &GroupSpec, topics: Topics) -> Result<crate::Consumer> {
        let mut opts = self.consumer.clone();
        if group.topics == Topics::All {
            let since = *self
                .declared
                .lock()
                .expect("not poisoned")
                .entry(group.group.clone())
                .or_insert_with(SystemTime::now);
            opts.start = StartFrom::Since(since);
        }
        // A consumer that shows its heartbeat keeps its entries however long
        // its handler runs. `claim_idle` decides only for consumers without
        // heartbeats (older versions of this crate in the same group), and
        // those must not take a running handler's event either.
        match group.handler_timeout {
            Some(timeout) if opts.claim_idle < timeout && self.claim_idle_explicit => {
                tracing::info!(
                    group = %group.group,
                    "claim_idle ({:?}) is shorter than the handler timeout ({timeout:?}): a consumer of an older version (without heartbeats) in this group may take over a slow handler's event while it runs",
                    opts.claim_idle
                )
            }
            Some(timeout) if opts.claim_idle < timeout * 2 && !self.claim_idle_explicit => {
                tracing::debug!(
                    group = %group.group,
                    "reclaim idle time raised to {:?}, twice the handler timeout",
                    timeout * 2
                );
                opts.claim_idle = timeout * 2;
            }
            None if !self.claim_idle_explicit => tracing::debug!(
                group = %group.group,
                "handlers have no timeout: a consumer of an older version (without heartbeats) in this group may take over one that runs longer than {:?}",
                opts.claim_idle
            ),
            _ => {}
        }
        Ok(self.client.consumer(&group.group, topics, opts).await?)
    }
}

impl Transport for RedisTransport {
    /// Streams: the streams read by position (see the crate README's
    /// "Pull feed"); pub/sub keeps nothing to read back.
    fn feed(&self) -> Option<&dyn eventbus_core::feed::Feed> {
        self.feed
            .as_deref()
            .map(|f| f as &dyn eventbus_core::feed::Feed)
    }

    fn name(&self) -> &'static str {
        self.name
    }

    /// Streams: groups compete (consumer groups); no broadcast (a group per
    /// instance would keep events for instances long gone). Pub/sub: groups
    /// compete through a lease (one instance of a group at a time handles
    /// its events, see [`lease`](crate::lease)), and broadcast is what
    /// pub/sub does by itself.
    fn capabilities(&self) -> Capabilities {
        Capabilities::COMPETING.with_broadcast(self.pubsub())
    }

    fn publish<'a>(&'a self, batch: &'a [Outgoing]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let result = match batch {
                [m] => self.client.publish_one(&m.event_type, &m.payload).await,
                _ => {
                    let pairs: Vec<(&str, &[u8])> = batch
                        .iter()
                        .map(|m| (&*m.event_type, &m.payload[..]))
                        .collect();
                    self.client.publish(&pairs).await
                }
            };
            Ok(result?)
        })
    }

    fn publish_at(&self, message: Outgoing, at: SystemTime) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            Ok(self
                .client
                .publish_at(&message.event_type, &message.payload, at)
                .await?)
        })
    }

    fn declare<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self.pubsub() {
                // Pub/sub keeps nothing for anyone: there is no group to
                // create, and a subscription opened and dropped here would
                // only linger (and count in PUBSUB NUMSUB) for a moment.
                return Ok(());
            }
            if group.broadcast {
                // Nothing to keep for it (and the bus refuses to run it).
                return Ok(());
            }
            // Creating a consumer creates the group on every stream it reads.
            self.consumer(group, group.topics.clone()).await.map(drop)
        })
    }

    fn subscribe<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, Result<Box<dyn Subscriber>>> {
        Box::pin(async move {
            if !self.pubsub() {
                if group.broadcast {
                    return Err(broadcast_unsupported(group));
                }
                let consumer = self.consumer(group, group.topics.clone()).await?;
                return Ok(Box::new(RedisSubscriber {
                    consumer,
                    pubsub: None,
                }) as Box<dyn Subscriber>);
            }
            if group.broadcast {
                let consumer = self.consumer(group, group.topics.clone()).await?;
                return Ok(Box::new(RedisSubscriber {
                    consumer,
                    pubsub: Some(PubSubGroup {
                        lease: None,
                        holder: Default::default(),
                        control: String::new(),
                    }),
                }) as Box<dyn Subscriber>);
            }
            // A competing group: its lease markers arrive on the same
            // connection as its events (a pattern subscription matches them).
            let control = lease::control_type(&group.group);
            let topics = match &group.topics {
                Topics::All => Topics::All,
                Topics::Types(types) => {
                    let mut types = types.clone();
                    types.push(control.clone());
                    Topics::Types(types)
                }
            };
            let consumer = self.consumer(group, topics).await?;
            let me = format!("{}-{:08x}", consumer.name(), fastrand::u32(..));
            let lease = Lease::join(self.client.clone(), &group.group, me, self.lease).await?;
            Ok(Box::new(RedisSubscriber {
                consumer,
                pubsub: Some(PubSubGroup {
                    lease: Some(lease),
                    holder: Default::default(),
                    control,
                }),
            }) as Box<dyn Subscriber>)
        })
    }

    fn claim_tick<'a>(&'a self, schedule: &'a str, tick_ms: u64) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.client.claim_tick(schedule, tick_ms).await?) })
    }

    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<DeadLetter>>> {
        Box::pin(async move { Ok(self.client.dead_letters(limit).await?) })
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { Ok(self.client.ping().await?) })
    }

    fn delete_dead_letter<'a>(&'a self, dead_letter_id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            match self.client.delete_dead_letter(dead_letter_id).await {
                Ok(found) => Ok(found),
                // Not an id this DLQ could hold: no such entry.
                Err(crate::Error::InvalidName { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Streams, for a group of named types: one script per stream (`XINFO
    /// GROUPS` lag and pending, the oldest pending or unread entry's age by
    /// its id). `None` for pub/sub and for a group of every type.
    fn group_stats<'a>(
        &'a self,
        group: &'a GroupSpec,
    ) -> Option<BoxFuture<'a, Result<GroupStats>>> {
        let Topics::Types(types) = &group.topics else {
            return None;
        };
        if self.pubsub() {
            return None;
        }
        Some(Box::pin(async move {
            let mut streams: Vec<String> =
                types.iter().map(|t| self.client.keys().stream(t)).collect();
            streams.sort_unstable();
            streams.dedup();
            let (mut lag, mut pending, mut oldest) = (Some(0u64), 0u64, 0u64);
            for stream in &streams {
                let mut inv = crate::scripts::GROUP_STATS.prepare_invoke();
                inv.key(stream).arg(&group.group);
                let (l, p, age): (i64, i64, i64) =
                    self.client.run_script("group stats script", &inv).await?;
                lag = lag.zip(u64::try_from(l).ok()).map(|(a, b)| a + b);
                pending += p.max(0) as u64;
                oldest = oldest.max(age.max(0) as u64);
            }
            let mut stats = GroupStats::new(0, pending, Duration::from_millis(oldest));
            stats.lag = lag;
            Ok(stats)
        }))
    }

    fn replay<'a>(&'a self, dead_letter_id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            match self.client.replay(dead_letter_id).await {
                Ok(group) => Ok(group.is_some()),
                // Not an id this DLQ could hold: no such entry.
                Err(crate::Error::InvalidName { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn run_background(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> BoxFuture<'static, Result<()>> {
        let client = self.client.clone();
        Box::pin(async move {
            // Moves due scheduled events to their streams, trims streams
            // without losing unread entries. Safe to run in every instance.
            tokio::select! {
                _ = client.run_scheduler(SchedulerOptions::default()) => {}
                _ = shutdown.cancelled() => {}
            }
            Ok(())
        })
    }
}

fn broadcast_unsupported(group: &GroupSpec) -> eventbus_core::Error {
    eventbus_core::Error::Config(format!(
        "group `{}` (handler `{}`) is broadcast, which Redis Streams cannot do (a group per instance would keep events for instances long gone): route its types to pub/sub (`?mode=pubsub`) or drop `broadcast`",
        group.group, group.handler
    ))
}

struct RedisSubscriber {
    consumer: crate::Consumer,
    /// Pub/sub mode: the lease of a competing group, and what its markers said.
    pubsub: Option<PubSubGroup>,
}

struct PubSubGroup {
    /// `None` for a broadcast group (every instance handles every event).
    lease: Option<Lease>,
    /// The holder the latest marker of the group named (`""`: released).
    holder: std::sync::Mutex<Option<String>>,
    /// The group's control type.
    control: String,
}

impl PubSubGroup {
    /// Keeps the deliveries this subscriber handles, in order; returns the
    /// ids of the others (lease markers, events another instance handles).
    fn filter(&self, batch: Vec<Delivery>) -> (Vec<Delivery>, Vec<DeliveryId>) {
        let mut keep = Vec::with_capacity(batch.len());
        let mut skip = Vec::new();
        let mut holder = self
            .holder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Whether this subscriber's lease can still be valid: read once per batch.
        let may_hold = self.lease.as_ref().is_some_and(Lease::may_hold);
        for d in batch {
            if lease::is_control(&d.event_type) {
                if d.event_type == self.control.as_str()
                    && let Some(h) = lease::holder_of(&d.payload)
                {
                    if h.is_empty()
                        && let Some(lease) = &self.lease
                    {
                        lease.released();
                    }
                    *holder = Some(h);
                }
                skip.push(d.id);
                continue;
            }
            let mine = match &self.lease {
                None => true,
                // A retry was this instance's already; a first delivery is
                // this instance's when the latest marker names it.
                Some(lease) => d.attempt > 1 || (may_hold && holder.as_deref() == Some(lease.me())),
            };
            if mine {
                keep.push(d);
            } else {
                skip.push(d.id);
            }
        }
        (keep, skip)
    }
}

impl RedisSubscriber {
    /// The deliveries of `batch` this subscriber handles, and the ids of the
    /// others, to acknowledge (pub/sub lease markers, events another
    /// instance of the group handles).
    fn mine(&self, batch: Vec<Delivery>) -> (Vec<Delivery>, Vec<DeliveryId>) {
        match &self.pubsub {
            None => (batch, Vec::new()),
            Some(group) => group.filter(batch),
        }
    }
}

impl Subscriber for RedisSubscriber {
    fn next(&self, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>>> {
        Box::pin(async move {
            // An empty batch means the read blocked for its whole window:
            // read again. A failed read (after the binding's reconnects) goes
            // back to the worker, the one owner of read retries.
            loop {
                let (batch, skip) = self.mine(self.consumer.read(max).await?);
                if !skip.is_empty() {
                    self.consumer.ack(&skip).await?;
                }
                if !batch.is_empty() {
                    return Ok(batch);
                }
            }
        })
    }

    fn next_now(&self, max: usize, out: &mut Vec<Delivery>) -> usize {
        let batch = self.consumer.read_now(max);
        if batch.is_empty() {
            return 0;
        }
        let (batch, skip) = self.mine(batch);
        // Pub/sub acks are local (they only release what is held).
        self.consumer.ack_now(&skip);
        let n = batch.len();
        out.extend(batch);
        n
    }

    fn ack<'a>(&'a self, ids: &'a [DeliveryId]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { Ok(self.consumer.ack(ids).await?) })
    }

    fn ack_now(&self, ids: &[DeliveryId]) -> Option<Result<()>> {
        self.consumer.ack_now(ids).then_some(Ok(()))
    }

    fn retry(&self, id: DeliveryId, delay: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { Ok(self.consumer.retry_later(id, delay).await?) })
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if let Some(lease) = self.pubsub.as_ref().and_then(|g| g.lease.as_ref()) {
                lease.release().await?;
            }
            Ok(self.consumer.close().await.map(drop)?)
        })
    }

    fn dead_letter<'a>(
        &'a self,
        delivery: &'a Delivery,
        info: DeadLetterInfo,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { Ok(self.consumer.dead_letter(delivery, &info).await.map(drop)?) })
    }
}
