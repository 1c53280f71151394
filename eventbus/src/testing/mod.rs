//! Test helpers (feature `test-util`): [`TestBus`], a bus on a private
//! in-memory transport that records what was published and runs handlers
//! until everything settled; and [`conformance`], the transport contract as
//! code, which every transport runs from its tests.
//!
//! Works on tokio's paused clock (`#[tokio::test(start_paused = true)]`):
//! retry backoff, `publish_after` and recurring schedules then take no real time.
//!
//! ```rust,standalone_crate
//! use eventbus::testing::TestBus;
//! # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema, eventbus::Event)]
//! # #[event("doc.ping")] struct Ping { n: u32 }
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> eventbus::Result<()> {
//! let test = TestBus::start(eventbus::Bus::builder().without_registered()).await?;
//! test.bus().publish(Ping { n: 1 }).await?;
//! test.settle().await;
//! assert_eq!(test.published_of::<Ping>(), vec![Ping { n: 1 }]);
//! test.stop().await
//! # }
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::bus::{Bus, BusBuilder, Running};
use crate::error::Result;
use crate::event::Event;
use crate::transport::memory::MemoryTransport;
use crate::transport::{DeadLetter, GroupSpec, Outgoing, Subscriber, Transport};

pub mod conformance;

/// A running bus on a private in-memory transport that records every publish.
#[derive(Debug)]
pub struct TestBus {
    bus: Bus,
    memory: MemoryTransport,
    log: Arc<Mutex<Vec<Outgoing>>>,
    running: Option<Running>,
}

impl TestBus {
    /// A test bus running every handler and schedule registered in the binary.
    pub async fn new() -> Result<Self> {
        Self::start(Bus::builder().service("test")).await
    }

    /// Builds `builder` on a recording in-memory transport and starts it.
    pub async fn start(builder: BusBuilder) -> Result<Self> {
        let memory = MemoryTransport::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let recording = Recording {
            inner: memory.clone(),
            log: log.clone(),
        };
        let bus = builder.transport(recording).build().await?;
        let running = Some(bus.spawn());
        Ok(Self {
            bus,
            memory,
            log,
            running,
        })
    }

    /// The bus under test.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The in-memory transport underneath.
    pub fn transport(&self) -> &MemoryTransport {
        &self.memory
    }

    /// Every message published so far (by the test and by handlers), in order.
    pub fn published(&self) -> Vec<crate::CloudEvent> {
        self.log
            .lock()
            .iter()
            .filter_map(|m| crate::codec::decode_cloudevent(&m.payload).ok())
            .collect()
    }

    /// The CloudEvents types published so far, in order.
    pub fn published_types(&self) -> Vec<String> {
        self.log
            .lock()
            .iter()
            .map(|m| m.event_type.to_string())
            .collect()
    }

    /// Every event of type `E` published so far, decoded.
    pub fn published_of<E: Event>(&self) -> Vec<E> {
        self.log
            .lock()
            .iter()
            .filter(|m| m.event_type == E::TYPE)
            .filter_map(|m| crate::codec::decode::<E>(&m.payload).ok())
            .collect()
    }

    /// Waits until no message is queued, being handled, or waiting for a
    /// retry. Scheduled publishes that are not due yet do not count.
    ///
    /// # Panics
    /// If that does not happen within 30 s of real time.
    pub async fn settle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut idle_rounds = 0;
        loop {
            tokio::task::yield_now().await;
            if self.memory.is_idle() {
                idle_rounds += 1;
                if idle_rounds >= 3 {
                    return;
                }
                continue;
            }
            idle_rounds = 0;
            assert!(
                std::time::Instant::now() < deadline,
                "the test bus did not settle within 30 s; a handler may be stuck"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The dead-letter queue.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.bus.dead_letters(usize::MAX).await
    }

    /// Stops the bus, draining in-flight handlers.
    pub async fn stop(mut self) -> Result<()> {
        match self.running.take() {
            Some(r) => r.shutdown().await,
            None => Ok(()),
        }
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        self.bus.shutdown();
    }
}

struct Recording {
    inner: MemoryTransport,
    log: Arc<Mutex<Vec<Outgoing>>>,
}

impl Transport for Recording {
    fn name(&self) -> &'static str {
        "memory (recording)"
    }

    fn publish<'a>(&'a self, batch: &'a [Outgoing]) -> BoxFuture<'a, Result<()>> {
        self.log.lock().extend(batch.iter().cloned());
        self.inner.publish(batch)
    }

    fn publish_now(&self, batch: &[Outgoing]) -> Option<Result<()>> {
        self.log.lock().extend(batch.iter().cloned());
        self.inner.publish_now(batch)
    }

    fn publish_at(&self, message: Outgoing, at: SystemTime) -> BoxFuture<'_, Result<()>> {
        self.log.lock().push(message.clone());
        self.inner.publish_at(message, at)
    }

    fn declare<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, Result<()>> {
        self.inner.declare(group)
    }

    fn subscribe<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, Result<Box<dyn Subscriber>>> {
        self.inner.subscribe(group)
    }

    fn claim_tick<'a>(&'a self, schedule: &'a str, tick_ms: u64) -> BoxFuture<'a, Result<bool>> {
        self.inner.claim_tick(schedule, tick_ms)
    }

    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<DeadLetter>>> {
        self.inner.dead_letters(limit)
    }

    fn replay<'a>(&'a self, dead_letter_id: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.inner.replay(dead_letter_id)
    }
}
