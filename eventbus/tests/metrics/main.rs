//! Metrics and health (one test binary for the area): exact counter and
//! histogram values after a known workload on memory, the backlog gauges on
//! memory and on a real redis-server, the generated table of `METRICS.md`,
//! and `/metrics`, `/healthz`, `/readyz` over real HTTP.

mod docs;
#[cfg(feature = "http")]
mod health;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod support;
