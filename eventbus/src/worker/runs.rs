//! The handler runs of one worker, in slots reused run after run.
//!
//! A worker runs up to `concurrency` handler runs at once. Each slot holds
//! one run: the handler's [`HandlerSlot`] (its future inline), the run's
//! delivery, envelope and span, a timer for the handler timeout, and a
//! waker of its own. Slots are made when first needed and then reused, so
//! starting and finishing a run allocates nothing (a `FuturesUnordered` of
//! boxed futures allocated a task and a future per event, and moved the
//! future twice).
//!
//! A slot's waker puts the slot's index on the ready list and wakes the
//! worker's task; [`Runs::poll_done`] polls the slots on the list (each at
//! most once a call, so a handler that keeps waking itself cannot starve
//! the worker) and collects the runs that ended.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::task::AtomicWaker;
use parking_lot::Mutex;

use crate::Envelope;
use crate::handler::{ErasedHandler, Failure, HandlerSlot};
use crate::transport::Delivery;

/// A run that ended: its delivery and envelope, how it went, how long it took.
pub(crate) type Finished = (Delivery, Envelope, Result<(), Failure>, Duration);

/// The slots whose run was woken, and the worker to wake for them.
#[derive(Default)]
struct ReadyList {
    slots: Mutex<Vec<usize>>,
    worker: AtomicWaker,
}

/// The waker of one slot.
struct SlotWaker {
    index: usize,
    /// On the ready list already (cleared just before the slot is polled).
    queued: AtomicBool,
    ready: Arc<ReadyList>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready.slots.lock().push(self.index);
            self.ready.worker.wake();
        }
    }
}

struct Slot {
    handler: Box<dyn HandlerSlot>,
    flag: Arc<SlotWaker>,
    waker: Waker,
    /// The run's delivery and envelope; `None` while the slot is free.
    run: Option<(Delivery, Envelope)>,
    span: tracing::Span,
    begun: tokio::time::Instant,
    /// The handler timeout's timer, reset for each run.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The runs of one worker.
pub(crate) struct Runs {
    handler: Arc<dyn ErasedHandler>,
    timeout: Option<Duration>,
    /// First attempt plus retries (what the run's span records at the end).
    max_attempts: u32,
    slots: Vec<Slot>,
    free: Vec<usize>,
    ready: Arc<ReadyList>,
    /// Swapped with the ready list while its slots are polled.
    polling: Vec<usize>,
    running: usize,
    /// Runs that ended, for the worker to settle.
    pub(crate) done: Vec<Finished>,
}

impl Runs {
    pub(crate) fn new(
        handler: Arc<dyn ErasedHandler>,
        timeout: Option<Duration>,
        max_attempts: u32,
    ) -> Self {
        Self {
            handler,
            timeout,
            max_attempts,
            slots: Vec::new(),
            free: Vec::new(),
            ready: Arc::default(),
            polling: Vec::new(),
            running: 0,
            done: Vec::new(),
        }
    }

    /// Runs in progress.
    pub(crate) fn running(&self) -> usize {
        self.running
    }

    /// A free slot's index (a new slot when none is free) and its handler
    /// slot, to start a run in; give it to [`Runs::begin`] or [`Runs::release`].
    pub(crate) fn acquire(&mut self) -> (usize, &mut dyn HandlerSlot) {
        let index = self.free.pop().unwrap_or_else(|| {
            let index = self.slots.len();
            let flag = Arc::new(SlotWaker {
                index,
                queued: AtomicBool::new(false),
                ready: self.ready.clone(),
            });
            self.slots.push(Slot {
                handler: self.handler.clone().slot(),
                waker: Waker::from(flag.clone()),
                flag,
                run: None,
                span: tracing::Span::none(),
                begun: tokio::time::Instant::now(),
                deadline: None,
            });
            index
        });
        (index, &mut *self.slots[index].handler)
    }

    /// Gives back a slot [`Runs::acquire`] returned, unused.
    pub(crate) fn release(&mut self, index: usize) {
        self.slots[index].handler.clear();
        self.free.push(index);
    }

    /// Runs what was started in slot `index` (polled at the next
    /// [`Runs::poll_done`]).
    pub(crate) fn begin(
        &mut self,
        index: usize,
        delivery: Delivery,
        envelope: Envelope,
        span: tracing::Span,
    ) {
        let slot = &mut self.slots[index];
        slot.run = Some((delivery, envelope));
        slot.span = span;
        slot.begun = tokio::time::Instant::now();
        if let Some(t) = self.timeout {
            let due = slot.begun + t;
            match &mut slot.deadline {
                Some(sleep) => sleep.as_mut().reset(due),
                None => slot.deadline = Some(Box::pin(tokio::time::sleep_until(due))),
            }
        }
        self.running += 1;
        // Polled at the worker's next `poll_done` (no need to wake it: it
        // is the one running this).
        slot.flag.queued.store(true, Ordering::Release);
        self.ready.slots.lock().push(index);
    }

    /// Polls the runs that were woken; ready when some ended (in
    /// [`Runs::done`]).
    pub(crate) fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.ready.worker.register(cx.waker());
        std::mem::swap(&mut self.polling, &mut *self.ready.slots.lock());
        let mut polling = std::mem::take(&mut self.polling);
        for &index in &polling {
            self.poll_slot(index);
        }
        polling.clear();
        self.polling = polling;
        if !self.ready.slots.lock().is_empty() {
            // Woken again meanwhile: come back after the worker's other work.
            cx.waker().wake_by_ref();
        }
        if self.done.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    fn poll_slot(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        // Cleared first: a wake while it is polled puts it on the list again.
        slot.flag.queued.store(false, Ordering::Release);
        if slot.run.is_none() {
            // A late wake of a run that ended (its timer, say).
            return;
        }
        let mut cx = Context::from_waker(&slot.waker);
        let polled = {
            let _entered = slot.span.enter();
            slot.handler.poll_run(&mut cx)
        };
        let outcome = match polled {
            Poll::Ready(outcome) => outcome,
            Poll::Pending => {
                let expired = match (&mut slot.deadline, self.timeout) {
                    (Some(deadline), Some(t)) => {
                        deadline.as_mut().poll(&mut cx).is_ready().then_some(t)
                    }
                    _ => None,
                };
                let Some(t) = expired else { return };
                slot.handler.clear();
                Err(Failure::Error(format!("handler timed out after {t:?}")))
            }
        };
        let took = slot.begun.elapsed();
        let (delivery, envelope) = slot.run.take().expect("checked above");
        let span = std::mem::replace(&mut slot.span, tracing::Span::none());
        crate::trace::settled(&span, &outcome, delivery.attempt, self.max_attempts);
        self.done.push((delivery, envelope, outcome, took));
        self.free.push(index);
        self.running -= 1;
    }
}
