//! [`RedisTransport`]: eventbus-core's [`Transport`] on Redis Streams
//! (durable, default) and pub/sub (`?mode=pubsub`).
//!
//! A group is a Redis consumer group (or, in pub/sub mode, a set of channel
//! subscriptions), a delivery id packs the stream entry id, and the delivery
//! count Redis keeps drives the attempts. See the crate README for the keys
//! and the guarantees per mode.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use eventbus_core::Result;
use eventbus_core::transport::{
    DeadLetter, DeadLetterInfo, Delivery, DeliveryId, GroupSpec, Outgoing, Subscriber, Topics,
    Transport,
};
use futures::future::BoxFuture;

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
}

impl RedisTransport {
    /// Connects to the server(s) named by `url` (see `eventbus-redis` for
    /// every option; `claim_idle_ms` and `claim_interval_ms` tune how soon
    /// the entries of a dead instance are taken over).
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
        Ok(Self {
            client,
            consumer,
            name,
            declared: Default::default(),
            claim_idle_explicit: true,
        })
    }

    /// The binding's client, for what the transport does not expose.
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn consumer(&self, group: &GroupSpec) -> Result<crate::Consumer> {
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
        // An entry pending longer than `claim_idle` is taken over as
        // abandoned: that must never happen to a handler still running.
        match group.handler_timeout {
            Some(timeout) if opts.claim_idle < timeout && self.claim_idle_explicit => {
                tracing::warn!(
                    group = %group.group,
                    "claim_idle ({:?}) is shorter than the handler timeout ({timeout:?}): a slow handler's event may be taken over by another instance while it runs",
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
            None if !self.claim_idle_explicit => tracing::warn!(
                group = %group.group,
                "handlers have no timeout: one that runs longer than {:?} may be taken over by another instance; set Bus::builder().handler_timeout(..)",
                opts.claim_idle
            ),
            _ => {}
        }
        Ok(self
            .client
            .consumer(&group.group, group.topics.clone(), opts)
            .await?)
    }
}

impl Transport for RedisTransport {
    fn name(&self) -> &'static str {
        self.name
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
            if self.client.config().mode() == Mode::PubSub {
                // Pub/sub keeps nothing for anyone: there is no group to
                // create, and a subscription opened and dropped here would
                // only linger (and count in PUBSUB NUMSUB) for a moment.
                return Ok(());
            }
            // Creating a consumer creates the group on every stream it reads.
            self.consumer(group).await.map(drop)
        })
    }

    fn subscribe<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, Result<Box<dyn Subscriber>>> {
        Box::pin(async move {
            let consumer = self.consumer(group).await?;
            Ok(Box::new(RedisSubscriber { consumer }) as Box<dyn Subscriber>)
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

struct RedisSubscriber {
    consumer: crate::Consumer,
}

impl Subscriber for RedisSubscriber {
    fn next(&self, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>>> {
        Box::pin(async move {
            // An empty batch means the read blocked for its whole window:
            // read again. A failed read (after the binding's reconnects) goes
            // back to the worker, the one owner of read retries.
            loop {
                let batch = self.consumer.read(max).await?;
                if !batch.is_empty() {
                    return Ok(batch);
                }
            }
        })
    }

    fn ack<'a>(&'a self, ids: &'a [DeliveryId]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { Ok(self.consumer.ack(ids).await?) })
    }

    fn retry(&self, id: DeliveryId, delay: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { Ok(self.consumer.retry_later(id, delay).await?) })
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { Ok(self.consumer.close().await.map(drop)?) })
    }

    fn dead_letter<'a>(
        &'a self,
        delivery: &'a Delivery,
        info: DeadLetterInfo,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { Ok(self.consumer.dead_letter(delivery, &info).await.map(drop)?) })
    }
}
