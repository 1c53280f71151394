//! `redis://`: Redis Streams (durable, default) and pub/sub (`?mode=pubsub`),
//! through the [`eventbus_redis`] binding (feature `redis`).
//!
//! The binding does the Redis work (keys, scripts, reclaim, schedules); this
//! module maps it onto [`Transport`]: a group is a Redis consumer group (or,
//! in pub/sub mode, a set of channel subscriptions), a delivery id is the
//! stream entry id, and the delivery count Redis keeps drives the attempts.
//! See `eventbus-redis/README.md` for the keys and the guarantees per mode.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use eventbus_redis::{
    Client, ConsumerOptions, EntryId, Mode, RedisConfig, SchedulerOptions, Types,
};
use futures::future::BoxFuture;

use super::{
    DeadLetter, DeadLetterInfo, Delivery, DeliveryId, GroupSpec, Outgoing, Subscriber, Topics,
    Transport,
};
use crate::error::{Error, Result};

pub(crate) async fn connect(url: &str) -> Result<Arc<dyn Transport>> {
    Ok(Arc::new(RedisTransport::connect(url).await?))
}

/// The Redis transport. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisTransport {
    client: Client,
    consumer: ConsumerOptions,
    name: &'static str,
    /// When each global group was first declared by this process: a global
    /// group reads the streams it finds from that moment on, so nothing
    /// published between `declare` and `subscribe` is missed.
    declared: Arc<parking_lot::Mutex<std::collections::HashMap<String, SystemTime>>>,
    /// The reclaim idle time was chosen by the user (URL or options): keep it.
    claim_idle_explicit: bool,
}

fn config_error(e: eventbus_redis::Error) -> Error {
    Error::Config(e.to_string())
}

fn redis_error(what: &str, e: eventbus_redis::Error) -> Error {
    Error::transport("redis", format!("{what}: {e}"), e)
}

impl RedisTransport {
    /// Connects to the server(s) named by `url` (see `eventbus-redis` for
    /// every option; `claim_idle_ms` and `claim_interval_ms` tune how soon
    /// the entries of a dead instance are taken over).
    pub async fn connect(url: &str) -> Result<Self> {
        let config = RedisConfig::from_url(url).map_err(config_error)?;
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
        let client = Client::connect(config).await.map_err(|e| match e {
            e @ eventbus_redis::Error::Connect { .. } => Error::Config(e.to_string()),
            e @ eventbus_redis::Error::Config { .. } => config_error(e),
            e => redis_error("cannot connect", e),
        })?;
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

    async fn consumer(&self, group: &GroupSpec) -> Result<eventbus_redis::Consumer> {
        let mut opts = self.consumer.clone();
        let types = match &group.topics {
            Topics::All => {
                let since = *self
                    .declared
                    .lock()
                    .entry(group.group.clone())
                    .or_insert_with(SystemTime::now);
                opts.start = eventbus_redis::StartFrom::Since(since);
                Types::All
            }
            Topics::Types(t) => Types::Only(t.clone()),
        };
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
        self.client
            .consumer(&group.group, types, opts)
            .await
            .map_err(|e| redis_error(&format!("cannot join group `{}`", group.group), e))
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
            result.map_err(|e| redis_error("publish failed", e))
        })
    }

    fn publish_at(&self, message: Outgoing, at: SystemTime) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.client
                .publish_at(&message.event_type, &message.payload, at)
                .await
                .map_err(|e| redis_error("scheduling failed", e))
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
        Box::pin(async move {
            self.client
                .claim_tick(schedule, tick_ms)
                .await
                .map_err(|e| redis_error("cannot claim a schedule tick", e))
        })
    }

    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<DeadLetter>>> {
        Box::pin(async move {
            let list = self
                .client
                .dead_letters(limit)
                .await
                .map_err(|e| redis_error("cannot list dead letters", e))?;
            Ok(list
                .into_iter()
                .map(|d| {
                    let mut dl = DeadLetter::new(
                        d.id.to_string(),
                        d.group,
                        DeadLetterInfo {
                            event_type: d.event_type.clone(),
                            event_id: None,
                            handler: d.handler,
                            attempts: d.attempts,
                            error: d.error,
                        },
                        d.time.unwrap_or(SystemTime::UNIX_EPOCH),
                        d.payload,
                    );
                    if dl.event_type.is_none() && !d.event_type.is_empty() {
                        dl.event_type = Some(d.event_type);
                    }
                    dl
                })
                .collect())
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.client
                .ping()
                .await
                .map_err(|e| redis_error("PING failed", e))
        })
    }

    fn replay<'a>(&'a self, dead_letter_id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let Ok(id) = dead_letter_id.parse::<eventbus_redis::DlqId>() else {
                return Ok(false);
            };
            self.client
                .replay(&id)
                .await
                .map(|group| group.is_some())
                .map_err(|e| redis_error("cannot replay the dead letter", e))
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
    consumer: eventbus_redis::Consumer,
}

fn entry_id(id: DeliveryId) -> EntryId {
    EntryId::from_bits(id.0)
}

impl Subscriber for RedisSubscriber {
    fn next(&self, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>>> {
        Box::pin(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match self.consumer.read(max).await {
                    Ok(entries) if entries.is_empty() => continue,
                    Ok(entries) => {
                        return Ok(entries
                            .into_iter()
                            .map(|e| Delivery {
                                id: DeliveryId(e.id.to_bits()),
                                event_type: e.event_type.into(),
                                payload: e.payload,
                                attempt: e.delivery_count.max(1),
                            })
                            .collect());
                    }
                    Err(e) => {
                        // The binding already retried its reconnect budget;
                        // keep the worker alive and try again.
                        tracing::warn!(
                            group = self.consumer.group(),
                            "reading from Redis failed, retrying in {backoff:?}: {e}"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
    }

    fn ack<'a>(&'a self, ids: &'a [DeliveryId]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let ids: Vec<EntryId> = ids.iter().map(|i| entry_id(*i)).collect();
            self.consumer
                .ack(&ids)
                .await
                .map_err(|e| redis_error("ack failed", e))
        })
    }

    fn retry(&self, id: DeliveryId, delay: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.consumer
                .retry_later(entry_id(id), delay)
                .await
                .map_err(|e| redis_error("cannot schedule the retry", e))
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.consumer
                .close()
                .await
                .map(drop)
                .map_err(|e| redis_error("cannot hand unfinished events back to the group", e))
        })
    }

    fn dead_letter<'a>(
        &'a self,
        delivery: &'a Delivery,
        info: DeadLetterInfo,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let event_type: Arc<str> = match crate::codec::Attributes::parse(&delivery.payload) {
                Ok(a) => Arc::from(&*a.ty),
                Err(_) => Arc::from(""),
            };
            let entry = eventbus_redis::Entry {
                id: entry_id(delivery.id),
                event_type,
                payload: Bytes::clone(&delivery.payload),
                delivery_count: delivery.attempt,
            };
            self.consumer
                .dead_letter(
                    &entry,
                    eventbus_redis::DeadLetterInfo::new(info.handler, info.attempts, info.error),
                )
                .await
                .map(drop)
                .map_err(|e| redis_error("cannot dead-letter", e))
        })
    }
}
