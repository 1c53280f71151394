//! The transport conformance suite (`eventbus::testing::conformance`) on
//! `memory://`, on tokio's paused clock: every scenario, every feature.

use eventbus::testing::conformance::{self, Features};

eventbus::conformance_tests!(Features::in_process(), conformance::memory());

/// The suite has teeth: a transport that breaks one promise fails the
/// scenario of that promise.
mod broken {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, SystemTime};

    use eventbus::testing::conformance::{self, Conformance, Features};
    use eventbus::transport::memory::MemoryTransport;
    use eventbus::transport::{
        DeadLetter, DeadLetterInfo, Delivery, DeliveryId, GroupSpec, Outgoing, Subscriber,
        Transport,
    };
    use futures::future::{BoxFuture, LocalBoxFuture};
    use parking_lot::Mutex;

    /// The one promise a [`Broken`] transport breaks.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Defect {
        /// Every subscriber gets a group of its own: nobody competes.
        NoCompetition,
        /// What a subscriber was handed is acknowledged when it goes away.
        AckOnDrop,
        /// `declare` keeps nothing; a group exists once someone subscribes.
        NoDeclare,
        /// `retry` delivers again at once, whatever the delay.
        RetryAtOnce,
        /// `dead_letter` acknowledges and keeps nothing.
        LoseDeadLetters,
        /// `replay` publishes the event again, to every group of its type.
        ReplayToAll,
        /// `publish_at` publishes at once.
        NoDelay,
        /// Every caller wins every tick.
        EveryoneClaims,
        /// Batches are published last first.
        Reversed,
    }

    #[derive(Debug, Clone)]
    struct Broken {
        inner: MemoryTransport,
        defect: Defect,
    }

    static NEXT: AtomicU64 = AtomicU64::new(1);

    impl Transport for Broken {
        fn name(&self) -> &'static str {
            "broken memory"
        }

        fn publish<'a>(&'a self, batch: &'a [Outgoing]) -> BoxFuture<'a, eventbus::Result<()>> {
            if self.defect == Defect::Reversed {
                let reversed: Vec<Outgoing> = batch.iter().rev().cloned().collect();
                return Box::pin(async move { self.inner.publish(&reversed).await });
            }
            self.inner.publish(batch)
        }

        fn publish_at(
            &self,
            message: Outgoing,
            at: SystemTime,
        ) -> BoxFuture<'_, eventbus::Result<()>> {
            match self.defect {
                Defect::NoDelay => {
                    Box::pin(
                        async move { self.inner.publish(std::slice::from_ref(&message)).await },
                    )
                }
                _ => self.inner.publish_at(message, at),
            }
        }

        fn declare<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, eventbus::Result<()>> {
            match self.defect {
                Defect::NoDeclare => Box::pin(async { Ok(()) }),
                _ => self.inner.declare(group),
            }
        }

        fn subscribe<'a>(
            &'a self,
            group: &'a GroupSpec,
        ) -> BoxFuture<'a, eventbus::Result<Box<dyn Subscriber>>> {
            Box::pin(async move {
                let mut spec = group.clone();
                if self.defect == Defect::NoCompetition {
                    spec.group = format!("{}#{}", spec.group, NEXT.fetch_add(1, Ordering::SeqCst));
                }
                let inner = self.inner.subscribe(&spec).await?;
                Ok(Box::new(BrokenSubscriber {
                    inner,
                    transport: self.clone(),
                    handed: Mutex::new(Vec::new()),
                }) as Box<dyn Subscriber>)
            })
        }

        fn claim_tick<'a>(
            &'a self,
            schedule: &'a str,
            tick_ms: u64,
        ) -> BoxFuture<'a, eventbus::Result<bool>> {
            match self.defect {
                Defect::EveryoneClaims => Box::pin(async { Ok(true) }),
                _ => self.inner.claim_tick(schedule, tick_ms),
            }
        }

        fn dead_letters(&self, limit: usize) -> BoxFuture<'_, eventbus::Result<Vec<DeadLetter>>> {
            self.inner.dead_letters(limit)
        }

        fn replay<'a>(&'a self, id: &'a str) -> BoxFuture<'a, eventbus::Result<bool>> {
            if self.defect != Defect::ReplayToAll {
                return self.inner.replay(id);
            }
            Box::pin(async move {
                let dead = self.inner.dead_letters(usize::MAX).await?;
                let Some(d) = dead.into_iter().find(|d| d.id == id) else {
                    return Ok(false);
                };
                // Replayed into its group (and so out of the DLQ), and
                // published once more for everyone else.
                self.inner.replay(id).await?;
                let ty = d.event_type.clone().unwrap_or_default();
                let message = Outgoing {
                    event_type: ty.into(),
                    payload: d.payload,
                };
                self.inner.publish(std::slice::from_ref(&message)).await?;
                Ok(true)
            })
        }

        fn run_background(
            &self,
            shutdown: tokio_util::sync::CancellationToken,
        ) -> BoxFuture<'static, eventbus::Result<()>> {
            self.inner.run_background(shutdown)
        }
    }

    struct BrokenSubscriber {
        inner: Box<dyn Subscriber>,
        transport: Broken,
        /// Handed out and not settled.
        handed: Mutex<Vec<DeliveryId>>,
    }

    impl Subscriber for BrokenSubscriber {
        fn next(&self, max: usize) -> BoxFuture<'_, eventbus::Result<Vec<Delivery>>> {
            Box::pin(async move {
                let got = self.inner.next(max).await?;
                self.handed.lock().extend(got.iter().map(|d| d.id));
                Ok(got)
            })
        }

        fn ack<'a>(&'a self, ids: &'a [DeliveryId]) -> BoxFuture<'a, eventbus::Result<()>> {
            self.handed.lock().retain(|id| !ids.contains(id));
            self.inner.ack(ids)
        }

        fn retry(&self, id: DeliveryId, delay: Duration) -> BoxFuture<'_, eventbus::Result<()>> {
            self.handed.lock().retain(|h| *h != id);
            match self.transport.defect {
                Defect::RetryAtOnce => self.inner.retry(id, Duration::ZERO),
                _ => self.inner.retry(id, delay),
            }
        }

        fn dead_letter<'a>(
            &'a self,
            delivery: &'a Delivery,
            info: DeadLetterInfo,
        ) -> BoxFuture<'a, eventbus::Result<()>> {
            self.handed.lock().retain(|h| *h != delivery.id);
            match self.transport.defect {
                Defect::LoseDeadLetters => self.inner.ack(std::slice::from_ref(&delivery.id)),
                _ => self.inner.dead_letter(delivery, info),
            }
        }

        fn settles_inline(&self) -> bool {
            self.inner.settles_inline()
        }
    }

    impl Drop for BrokenSubscriber {
        fn drop(&mut self) {
            if self.transport.defect == Defect::AckOnDrop {
                let ids = std::mem::take(&mut *self.handed.lock());
                // The memory transport settles without waiting.
                let _ = futures::FutureExt::now_or_never(self.inner.ack(&ids));
            }
        }
    }

    /// Runs `scenario` on a transport with `defect`, and asserts it fails.
    fn fails(defect: Defect, scenario: for<'a> fn(&'a Conformance) -> LocalBoxFuture<'a, ()>) {
        let connect = move || {
            let broken = Broken {
                inner: MemoryTransport::new(),
                defect,
            };
            move || {
                let broken = broken.clone();
                async move { Ok(Arc::new(broken) as Arc<dyn Transport>) }
            }
        };
        let outcome = std::panic::catch_unwind(|| {
            conformance::run(Features::in_process(), connect, scenario)
        });
        assert!(outcome.is_err(), "the suite did not notice {defect:?}");
    }

    macro_rules! catches {
        ($($test:ident: $defect:ident => $scenario:ident;)*) => {$(
            #[test]
            fn $test() {
                fails(Defect::$defect, |c| Box::pin(conformance::$scenario(c)));
            }
        )*};
    }

    catches! {
        a_group_that_does_not_compete: NoCompetition => instances_of_one_group_compete;
        a_lost_delivery_that_is_acknowledged: AckOnDrop => a_lost_subscriber_s_deliveries_come_back;
        a_group_that_keeps_nothing_before_it_runs: NoDeclare => events_published_before_the_bus_runs_are_kept;
        a_retry_without_backoff: RetryAtOnce => failures_are_retried_with_backoff_then_dead_lettered;
        lost_dead_letters: LoseDeadLetters => dead_letters_are_listed_and_replayed_to_their_group;
        lost_poison_events: LoseDeadLetters => a_poison_event_is_dead_lettered_and_others_keep_flowing;
        lost_malformed_messages: LoseDeadLetters => malformed_messages_go_to_the_dlq_and_others_keep_flowing;
        a_replay_to_every_group: ReplayToAll => dead_letters_are_listed_and_replayed_to_their_group;
        a_delay_that_is_ignored: NoDelay => delayed_events_are_delivered_when_due;
        a_tick_claimed_by_everyone: EveryoneClaims => a_schedule_fires_once_per_tick_across_instances;
        a_tick_claimed_twice: EveryoneClaims => each_tick_is_claimed_by_one_connection;
        batches_out_of_order: Reversed => events_of_one_type_arrive_in_publish_order;
    }
}
