//! The measurement helpers every load example shares: percentiles, medians,
//! rates and CPU time (this process's threads, redis-server's).
//!
//! Included with `#[path = "common/measure.rs"] mod measure;`; an example
//! that needs only part of it allows the rest to go unused.

use std::time::Duration;

/// Percentiles of a set of latencies, in the unit they were recorded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lat {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Lat {
    /// The percentiles of `v` (sorted in place); `None` when it is empty.
    pub fn of(v: &mut [u64]) -> Option<Lat> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Lat {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: v[v.len() - 1],
        })
    }

    /// Each percentile's median over the rounds that have one.
    pub fn median_of(v: impl IntoIterator<Item = Option<Lat>>) -> Option<Lat> {
        let v: Vec<Lat> = v.into_iter().flatten().collect();
        (!v.is_empty()).then(|| Lat {
            p50: median_u64(v.iter().map(|l| l.p50).collect()),
            p90: median_u64(v.iter().map(|l| l.p90).collect()),
            p99: median_u64(v.iter().map(|l| l.p99).collect()),
            max: median_u64(v.iter().map(|l| l.max).collect()),
        })
    }
}

/// Events per second.
pub fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// The median of the figures that are numbers; NaN when there is none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

pub fn median_u64(v: Vec<u64>) -> u64 {
    median(v.into_iter().map(|x| x as f64).collect()) as u64
}

/// CPU time used so far by this process's threads whose name starts with
/// `name` (every thread for `""`), in ns (`/proc/self/task/*/schedstat`).
pub fn threads_cpu_ns(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| {
            let dir = t.ok()?.path();
            if !name.is_empty() {
                let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
                if !comm.starts_with(name) {
                    return None;
                }
            }
            let stat = std::fs::read_to_string(dir.join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// CPU time used so far by this process (every thread), in ns.
pub fn process_cpu_ns() -> u64 {
    threads_cpu_ns("")
}

/// CPU time used so far by redis-server (`INFO cpu`, user + system), in ns.
#[cfg(feature = "redis")]
pub async fn redis_cpu_ns(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    Ok(info
        .lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split_once(':')?.1.trim().parse::<f64>().ok())
        .map(|secs| (secs * 1e9) as u64)
        .sum())
}

/// `ns` in ms, two decimals.
pub fn ms(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1e6)
}
