//! Runs one handler group: reads deliveries, runs the handler with bounded
//! concurrency, and settles each delivery (ack, delayed retry, dead letter).
//!
//! Three tasks per group, so that no step waits on another: a reader that
//! only asks the transport for as many deliveries as there are free slots, the
//! processor that runs handlers, and a settler that batches acks into one
//! transport call.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::bus::{Bus, RetryPolicy};
use crate::context::Context;
use crate::event::Upcast;
use crate::handler::{Failure, HandlerDef, Incoming};
use crate::transport::{DeadLetterInfo, Delivery, DeliveryId, GroupSpec, Subscriber};

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
}

enum Settle {
    Ack(DeliveryId),
    Retry(DeliveryId, Duration),
    Dead(Delivery, DeadLetterInfo),
}

const MAX_BATCH: usize = 256;

pub(crate) async fn run(
    bus: Bus,
    spec: Arc<WorkerSpec>,
    token: CancellationToken,
) -> crate::Result<()> {
    let sub: Arc<dyn Subscriber> = Arc::from(bus.transport().subscribe(&spec.group).await?);
    let slots = Arc::new(Semaphore::new(spec.concurrency));
    let (batch_tx, mut batch_rx) = mpsc::channel::<Vec<Delivery>>(spec.concurrency.clamp(1, 64));
    let (settle_tx, settle_rx) = mpsc::unbounded_channel::<Settle>();
    let reader = tokio::spawn(read_loop(
        sub.clone(),
        slots.clone(),
        batch_tx,
        token.clone(),
        spec.clone(),
    ));
    let settler = tokio::spawn(settle_loop(sub.clone(), settle_rx, spec.clone()));
    let retry = bus.retry_policy();

    let mut in_flight = FuturesUnordered::new();
    let mut reading = true;
    loop {
        tokio::select! {
            Some((delivery, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                slots.add_permits(1);
                settle(&spec, &retry, &settle_tx, delivery, outcome);
            }
            batch = batch_rx.recv(), if reading => match batch {
                Some(batch) => {
                    for delivery in batch {
                        match start(&bus, &spec, delivery) {
                            Ok(fut) => in_flight.push(fut),
                            Err((delivery, reason)) => {
                                slots.add_permits(1);
                                dead(&spec, &settle_tx, delivery, reason);
                            }
                        }
                    }
                }
                None => reading = false,
            },
            else => break,
        }
    }
    drop(settle_tx);
    let _ = reader.await;
    let _ = settler.await;
    Ok(())
}

type Outcome = Result<(), Failure>;

fn start(
    bus: &Bus,
    spec: &Arc<WorkerSpec>,
    delivery: Delivery,
) -> Result<
    impl std::future::Future<Output = (Delivery, Outcome)> + Send + 'static,
    (Delivery, String),
> {
    if delivery.attempt > spec.max_attempts {
        let reason = format!(
            "delivered {} times without being acknowledged (the handler crashed, hung, or its worker was killed each time); at most {} attempts are allowed",
            delivery.attempt - 1,
            spec.max_attempts
        );
        return Err((delivery, reason));
    }
    let ctx = Context::new(
        bus.clone(),
        delivery.payload.clone(),
        delivery.attempt,
        spec.group_name.clone(),
    );
    let incoming = Incoming {
        payload: &delivery.payload,
        upcasts: &spec.upcasts,
    };
    let (fut, span) = match spec.handler.handler.call(incoming, ctx) {
        Ok((attrs, fut)) => {
            let span = tracing::info_span!(
                "eventbus.handle",
                event_id = %attrs.id,
                event_type = %attrs.ty,
                handler = %spec.group.handler,
                attempt = delivery.attempt,
            );
            (fut, span)
        }
        Err(e) => {
            let reason = e.to_string();
            return Err((delivery, reason));
        }
    };
    let timeout = spec.timeout;
    Ok(async move {
        let outcome = match timeout {
            None => fut.instrument(span).await,
            Some(t) => match tokio::time::timeout(t, fut.instrument(span)).await {
                Ok(o) => o,
                Err(_) => Err(Failure::Error(format!("handler timed out after {t:?}"))),
            },
        };
        (delivery, outcome)
    })
}

fn settle(
    spec: &WorkerSpec,
    retry: &RetryPolicy,
    tx: &mpsc::UnboundedSender<Settle>,
    delivery: Delivery,
    outcome: Outcome,
) {
    match outcome {
        Ok(()) => {
            let _ = tx.send(Settle::Ack(delivery.id));
        }
        Err(Failure::Error(error)) => {
            if delivery.attempt < spec.max_attempts {
                let delay = retry.delay(delivery.attempt);
                tracing::warn!(
                    handler = %spec.group.handler,
                    attempt = delivery.attempt,
                    retry_in = ?delay,
                    "handler failed, will retry: {error}"
                );
                let _ = tx.send(Settle::Retry(delivery.id, delay));
            } else {
                dead(spec, tx, delivery, error);
            }
        }
    }
}

fn dead(spec: &WorkerSpec, tx: &mpsc::UnboundedSender<Settle>, delivery: Delivery, error: String) {
    tracing::error!(
        handler = %spec.group.handler,
        group = %spec.group.group,
        attempts = delivery.attempt,
        "event moved to the dead-letter queue: {error}"
    );
    let info = DeadLetterInfo {
        handler: spec.group.handler.clone(),
        attempts: delivery.attempt,
        error,
    };
    let _ = tx.send(Settle::Dead(delivery, info));
}

async fn read_loop(
    sub: Arc<dyn Subscriber>,
    slots: Arc<Semaphore>,
    tx: mpsc::Sender<Vec<Delivery>>,
    token: CancellationToken,
    spec: Arc<WorkerSpec>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let first = tokio::select! {
            biased;
            _ = token.cancelled() => return,
            p = slots.acquire() => match p { Ok(p) => p, Err(_) => return },
        };
        first.forget();
        let mut n = 1;
        while n < MAX_BATCH {
            match slots.try_acquire() {
                Ok(p) => {
                    p.forget();
                    n += 1;
                }
                Err(_) => break,
            }
        }
        let got = tokio::select! {
            biased;
            _ = token.cancelled() => {
                slots.add_permits(n);
                return;
            }
            got = sub.next(n) => got,
        };
        match got {
            Ok(batch) => {
                backoff = Duration::from_millis(50);
                slots.add_permits(n.saturating_sub(batch.len()));
                if batch.is_empty() {
                    continue;
                }
                if tx.send(batch).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                slots.add_permits(n);
                tracing::warn!(group = %spec.group.group, "cannot read from the transport, retrying in {backoff:?}: {e}");
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn settle_loop(
    sub: Arc<dyn Subscriber>,
    mut rx: mpsc::UnboundedReceiver<Settle>,
    spec: Arc<WorkerSpec>,
) {
    let mut acks = Vec::new();
    let mut others = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(cmd) = next {
            match cmd {
                Settle::Ack(id) => acks.push(id),
                other => others.push(other),
            }
            if acks.len() >= 1024 {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !acks.is_empty() {
            retrying(&spec, "acknowledge", || sub.ack(&acks)).await;
            acks.clear();
        }
        for cmd in others.drain(..) {
            match cmd {
                Settle::Ack(_) => {}
                Settle::Retry(id, delay) => {
                    retrying(&spec, "schedule a retry", || sub.retry(id, delay)).await
                }
                Settle::Dead(delivery, info) => {
                    retrying(&spec, "dead-letter", || {
                        sub.dead_letter(&delivery, info.clone())
                    })
                    .await
                }
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
