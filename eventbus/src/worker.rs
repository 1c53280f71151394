//! Runs one handler group: reads deliveries, runs the handler with bounded
//! concurrency, and settles each delivery (ack, delayed retry, dead letter).
//!
//! One loop per group keeps one read in flight for as many deliveries as
//! there are free slots, runs the handlers, and collects the acks of
//! everything that finished into one transport call. A transport whose
//! settling is synchronous (memory) is settled inline; others (Redis) get a
//! settler task, so that a round trip never stalls the handlers.
//!
//! Prefetch (transports with a round trip per read): with only `concurrency`
//! deliveries per read, fast handlers would wait on every round trip
//! (Little's law: at most `concurrency` events per round trip; measured on
//! Redis, 16 per read ran at 0.4x a raw loop reading 256). So the worker also
//! reads ahead as many deliveries as the handlers get through in about
//! [`PREFETCH_WINDOW`], from an estimate of the handler run time that rises
//! at once with a slow run and falls slowly. Slow handlers (a job queue) get
//! no prefetch: a delivery is then never held by a busy instance while
//! another one idles. Prefetched deliveries stay unacknowledged like running
//! ones, and are handled (or, if the worker dies, delivered again) the same.
//! The one cost: if every handler run suddenly becomes far slower than the
//! estimate (a dependency hangs), deliveries read ahead just before can wait
//! past the transport's reclaim time and be handled twice; never lost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Envelope;
use crate::RetryPolicy;
use crate::bus::Bus;
use crate::context::ContextSeed;
use crate::event::Upcast;
use crate::handler::{Call, Failure, HandlerDef};
use crate::transport::{DeadLetterInfo, Delivery, DeliveryId, GroupSpec, Subscriber};

mod runs;
use runs::{Finished, Runs};

/// Everything a worker needs to know about its group.
#[derive(Debug)]
pub(crate) struct WorkerSpec {
    pub group: GroupSpec,
    pub group_name: Arc<str>,
    pub handler: Arc<HandlerDef>,
    pub upcasts: Vec<(&'static str, Upcast)>,
    /// First attempt plus retries.
    pub max_attempts: u32,
    pub concurrency: usize,
    pub timeout: Option<Duration>,
    /// Types a global handler does not run for: Celery tasks, which run
    /// once, on their own handler (on every transport alike).
    pub skip: Arc<[&'static str]>,
    pub metrics: crate::metrics::GroupMetrics,
}

enum Settle {
    Ack(DeliveryId),
    Acks(Vec<DeliveryId>),
    Retry(DeliveryId, Duration),
    Dead(Delivery, DeadLetterInfo),
}

const MAX_BATCH: usize = 256;

/// How much handler work (in time) may wait read ahead; see the module docs.
const PREFETCH_WINDOW: Duration = Duration::from_millis(10);

/// Estimates the handler run time to size the prefetch.
struct RunTime {
    /// The estimate in ns; `None` until a run finished.
    ns: Option<u64>,
}

impl RunTime {
    fn record(&mut self, took: Duration) {
        let s = took.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.ns = Some(match self.ns {
            None => s,
            // Up half-way at once: a slowdown stops the prefetch quickly.
            Some(est) if s > est => est + (s - est) / 2,
            Some(est) => est - (est - s) / 16,
        });
    }

    /// Deliveries to hold besides those running.
    fn prefetch(&self, concurrency: usize) -> usize {
        match self.ns {
            None => 0,
            Some(ns) => {
                let n = concurrency as u128 * PREFETCH_WINDOW.as_nanos() / u128::from(ns.max(1));
                n.min(MAX_BATCH as u128) as usize
            }
        }
    }
}

/// Where settle commands go: inline for transports that settle synchronously.
struct Settler<'a> {
    sub: &'a dyn Subscriber,
    spec: &'a WorkerSpec,
    tx: Option<mpsc::UnboundedSender<Settle>>,
    acks: Vec<DeliveryId>,
    others: Vec<Settle>,
}

impl Settler<'_> {
    fn push(&mut self, cmd: Settle) {
        match cmd {
            Settle::Ack(id) => self.acks.push(id),
            Settle::Acks(ids) => self.acks.extend(ids),
            other => self.others.push(other),
        }
    }

    async fn flush(&mut self) {
        if self.acks.is_empty() && self.others.is_empty() {
            return;
        }
        match &self.tx {
            Some(tx) => {
                // Acks that need no round trip (pub/sub) are done here.
                if !self.acks.is_empty() && !matches!(self.sub.ack_now(&self.acks), Some(Ok(()))) {
                    let _ = tx.send(Settle::Acks(std::mem::take(&mut self.acks)));
                }
                self.acks.clear();
                for cmd in self.others.drain(..) {
                    let _ = tx.send(cmd);
                }
            }
            None => {
                let others = std::mem::take(&mut self.others);
                execute(self.sub, self.spec, &self.acks, others).await;
                self.acks.clear();
            }
        }
    }
}

/// How long a stopping worker tries to hand unfinished deliveries back.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the worker of `spec` until `token` is cancelled. `live` is told once
/// the subscription is live (the transport's `subscribe` returned: whatever is
/// published from then on reaches this group); if subscribing fails, the
/// error is returned and `live` is dropped untold.
pub(crate) async fn run(
    bus: Bus,
    spec: Arc<WorkerSpec>,
    token: CancellationToken,
    live: tokio::sync::oneshot::Sender<()>,
) -> crate::Result<()> {
    let sub = tokio::select! {
        sub = bus.transport().subscribe(&spec.group) => sub?,
        // Stopped while subscribing (an unreachable broker, say).
        _ = token.cancelled() => return Ok(()),
    };
    let sub: Arc<dyn Subscriber> = Arc::from(sub);
    let _ = live.send(());
    let retry = bus.retry_policy();
    let (tx, background) = if sub.settles_inline() {
        (None, None)
    } else {
        let (tx, rx) = mpsc::unbounded_channel::<Settle>();
        (
            Some(tx),
            Some(tokio::spawn(settle_loop(sub.clone(), rx, spec.clone()))),
        )
    };
    let mut settler = Settler {
        sub: &*sub,
        spec: &spec,
        tx,
        acks: Vec::new(),
        others: Vec::new(),
    };

    let mut runs = Runs::new(
        spec.handler.handler.clone(),
        spec.timeout,
        spec.max_attempts,
    );
    // Read and not started yet (prefetch).
    let mut waiting: VecDeque<Delivery> = VecDeque::new();
    // What `next_now` hands over, on its way to `waiting` (kept for reuse).
    let mut ready: Vec<Delivery> = Vec::new();
    let mut run_time = RunTime { ns: None };
    let prefetching = !sub.settles_inline();
    let mut reading = true;
    let mut read: Option<BoxFuture<'_, crate::Result<Vec<Delivery>>>> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        while runs.running() < spec.concurrency
            && let Some(delivery) = waiting.pop_front()
        {
            match start(&bus, &spec, &mut runs, delivery) {
                Ok(None) => {}
                // Not to be run (a Celery task on a global handler): done.
                Ok(Some((delivery, envelope, outcome, took))) => {
                    settler.push(settle(&spec, &retry, delivery, envelope, outcome, took))
                }
                Err(refused) => {
                    let Refused {
                        delivery,
                        reason,
                        read,
                    } = *refused;
                    settler.push(dead(&spec, delivery, None, read, reason))
                }
            }
        }
        // Room for the handler slots and the prefetch, minus what is held.
        let prefetch = if prefetching {
            run_time.prefetch(spec.concurrency)
        } else {
            0
        };
        let room = (spec.concurrency + prefetch).saturating_sub(runs.running() + waiting.len());
        if reading && read.is_none() && room > 0 {
            // What is ready already (in-process, or buffered) is taken
            // without a future.
            if sub.next_now(room.min(MAX_BATCH), &mut ready) > 0 {
                spec.metrics
                    .consumed(&spec.group_name, bus.transport().name(), &ready);
                waiting.extend(ready.drain(..));
                continue;
            }
            read = Some(sub.next(room.min(MAX_BATCH)));
        }
        // Settle what finished (and what could not start) before waiting.
        settler.flush().await;
        tokio::select! {
            biased;
            () = std::future::poll_fn(|cx| runs.poll_done(cx)), if runs.running() > 0 => {
                // Everything that ended is settled at once.
                for (delivery, envelope, outcome, took) in runs.done.drain(..) {
                    run_time.record(took);
                    settler.push(settle(&spec, &retry, delivery, envelope, outcome, took));
                }
            }
            got = async { read.as_mut().expect("guarded").await }, if read.is_some() => {
                read = None;
                match got {
                    Ok(batch) => {
                        backoff = Duration::from_millis(50);
                        spec.metrics.consumed(&spec.group_name, bus.transport().name(), &batch);
                        waiting.extend(batch);
                    }
                    Err(e) => {
                        tracing::warn!(group = %spec.group.group, "cannot read from the transport, retrying in {backoff:?}: {e}");
                        let wait = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        let sub = &*sub;
                        let n = room.min(MAX_BATCH);
                        read = Some(Box::pin(async move {
                            tokio::time::sleep(wait).await;
                            sub.next(n).await
                        }));
                    }
                }
            }
            _ = token.cancelled(), if reading => {
                // Stop taking events; a read in flight is cancel-safe. What
                // was read ahead is still handled (it is short by design).
                reading = false;
                read = None;
            }
            else => break,
        }
    }
    settler.flush().await;
    drop(settler);
    if let Some(task) = background {
        let _ = task.await;
    }
    // Everything handed to this worker is settled: hand back what the
    // transport still holds for it (e.g. a read cancelled above). Bounded,
    // so an unreachable broker cannot hold up the shutdown.
    match tokio::time::timeout(CLOSE_TIMEOUT, sub.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(group = %spec.group.group, "{e}; other instances take those events over after the claim idle time");
        }
        Err(_) => {
            tracing::warn!(group = %spec.group.group, "could not hand unfinished events back within {CLOSE_TIMEOUT:?}; other instances take them over after the claim idle time");
        }
    }
    Ok(())
}

type Outcome = Result<(), Failure>;

/// Starts the run of `delivery` in a slot of `runs`; a delivery that is not
/// to be run ends at once (returned), one that cannot be is refused.
fn start(
    bus: &Bus,
    spec: &Arc<WorkerSpec>,
    runs: &mut Runs,
    delivery: Delivery,
) -> Result<Option<Finished>, Box<Refused>> {
    if delivery.attempt > spec.max_attempts {
        let reason = format!(
            "delivered {} times without being acknowledged (the handler crashed, hung, or its worker was killed each time); at most {} attempts are allowed",
            delivery.attempt - 1,
            spec.max_attempts
        );
        return Err(Box::new(Refused {
            delivery,
            reason,
            read: None,
        }));
    }
    let call = Call {
        payload: &delivery.payload,
        upcasts: &spec.upcasts,
        context: ContextSeed {
            bus: bus.clone(),
            attempt: delivery.attempt,
            group: spec.group_name.clone(),
        },
    };
    let mut span = None;
    let (index, slot) = runs.acquire();
    let started = slot.start(call, &mut |envelope| {
        let (s, handling) = crate::trace::process(crate::trace::Delivered {
            transport: bus.transport().name(),
            group: &spec.group_name,
            handler: &spec.group.handler,
            envelope,
            attempt: delivery.attempt,
            parent: bus.process_parent(),
        });
        span = Some(s);
        handling
    });
    let envelope = match started {
        Ok(envelope) => envelope,
        Err(e) => {
            runs.release(index);
            // What the decoder could read of the event (its type and id
            // even when another attribute is broken).
            let read = e
                .event_type()
                .map(|t| (t.to_owned(), e.event_id().map(str::to_owned)));
            return Err(Box::new(Refused {
                reason: e.to_string(),
                delivery,
                read,
            }));
        }
    };
    let span = span.unwrap_or_else(tracing::Span::none);
    if spec.skip.contains(&envelope.event_type()) {
        runs.release(index);
        let outcome = Ok(());
        crate::trace::settled(&span, &outcome, delivery.attempt, spec.max_attempts);
        return Ok(Some((delivery, envelope, outcome, Duration::ZERO)));
    }
    runs.begin(index, delivery, envelope, span);
    Ok(None)
}

fn settle(
    spec: &WorkerSpec,
    retry: &RetryPolicy,
    delivery: Delivery,
    envelope: Envelope,
    outcome: Outcome,
    took: Duration,
) -> Settle {
    spec.metrics.processed(
        &spec.group_name,
        envelope.event_type(),
        outcome.is_ok(),
        took,
    );
    match outcome {
        Ok(()) => Settle::Ack(delivery.id),
        Err(Failure::Error(error)) => {
            if delivery.attempt < spec.max_attempts {
                let delay = retry.delay(delivery.attempt);
                tracing::warn!(
                    handler = %spec.group.handler,
                    attempt = delivery.attempt,
                    retry_in = ?delay,
                    "handler failed, will retry: {}",
                    eventbus_core::escape::Escaped(&error)
                );
                spec.metrics
                    .retried(&spec.group_name, envelope.event_type());
                Settle::Retry(delivery.id, delay)
            } else {
                dead(spec, delivery, Some(&envelope), None, error)
            }
        }
    }
}

/// A delivery the worker could not start: why, and what the decoder could
/// read of the event.
struct Refused {
    delivery: Delivery,
    reason: String,
    /// The CloudEvents type and id, when readable.
    read: Option<(String, Option<String>)>,
}

/// Dead-letters `delivery`, with the type and id from its envelope; when the
/// handler never got the event, from what the decoder read (`read`), or
/// else from whatever of the message can be read (a rare path: a message
/// delivered too often is parsed a second time) and the delivery's type.
fn dead(
    spec: &WorkerSpec,
    delivery: Delivery,
    envelope: Option<&Envelope>,
    read: Option<(String, Option<String>)>,
    error: String,
) -> Settle {
    let parsed;
    let (event_type, event_id) = match (envelope, read) {
        (Some(e), _) => (e.event_type().to_owned(), Some(e.id().to_owned())),
        (None, Some(read)) => read,
        (None, None) => {
            parsed = Envelope::parse(delivery.payload.clone()).ok();
            match &parsed {
                Some(e) => (e.event_type().to_owned(), Some(e.id().to_owned())),
                None => (delivery.event_type.as_str().to_owned(), None),
            }
        }
    };
    tracing::error!(
        handler = %spec.group.handler,
        group = %spec.group.group,
        event_type = %eventbus_core::escape::Escaped(&event_type),
        event_id = %eventbus_core::escape::Escaped(event_id.as_deref().unwrap_or("")),
        attempts = delivery.attempt,
        "event moved to the dead-letter queue: {}",
        eventbus_core::escape::Escaped(&error)
    );
    spec.metrics.dead_lettered(&spec.group_name, &event_type);
    let info = DeadLetterInfo {
        event_type,
        event_id,
        handler: spec.group.handler.clone(),
        attempts: delivery.attempt,
        error,
    };
    Settle::Dead(delivery, info)
}

async fn settle_loop(
    sub: Arc<dyn Subscriber>,
    mut rx: mpsc::UnboundedReceiver<Settle>,
    spec: Arc<WorkerSpec>,
) {
    while let Some(first) = rx.recv().await {
        let mut acks = Vec::new();
        let mut others = Vec::new();
        let mut next = Some(first);
        while let Some(cmd) = next {
            match cmd {
                Settle::Ack(id) => acks.push(id),
                Settle::Acks(ids) => acks.extend(ids),
                other => others.push(other),
            }
            if acks.len() >= 1024 {
                break;
            }
            next = rx.try_recv().ok();
        }
        execute(&*sub, &spec, &acks, others).await;
    }
}

async fn execute(
    sub: &dyn Subscriber,
    spec: &WorkerSpec,
    acks: &[DeliveryId],
    others: Vec<Settle>,
) {
    if !acks.is_empty() {
        match sub.ack_now(acks) {
            Some(Ok(())) => {}
            _ => retrying(spec, "acknowledge", || sub.ack(acks)).await,
        }
    }
    for cmd in others {
        match cmd {
            Settle::Ack(id) => {
                retrying(spec, "acknowledge", || sub.ack(std::slice::from_ref(&id))).await
            }
            Settle::Acks(ids) => retrying(spec, "acknowledge", || sub.ack(&ids)).await,
            Settle::Retry(id, delay) => {
                retrying(spec, "schedule a retry", || sub.retry(id, delay)).await
            }
            Settle::Dead(delivery, info) => {
                retrying(spec, "dead-letter", || {
                    sub.dead_letter(&delivery, info.clone())
                })
                .await
            }
        }
    }
}

/// Settling is retried a few times; if the transport stays down the delivery
/// is simply left unacknowledged, and so delivered again later.
async fn retrying<'a, F>(spec: &WorkerSpec, what: &str, mut op: F)
where
    F: FnMut() -> futures::future::BoxFuture<'a, crate::Result<()>>,
{
    let mut delay = Duration::from_millis(20);
    for attempt in 1..=5 {
        match op().await {
            Ok(()) => return,
            Err(e) if attempt == 5 => {
                tracing::error!(group = %spec.group.group, "cannot {what} (the event will be delivered again): {e}");
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
        }
    }
}
