//! The last hour of every pipeline's throughput and checkpoint lag, kept in
//! memory for the web console's charts and sparklines
//! (`GET /pipelines/{name}/history`, `GET /history`).
//!
//! A sampler task reads each pipeline's view every *resolution* (default
//! 10 s, `--history-resolution-secs`) and appends one [`Sample`] to that
//! pipeline's ring; the ring keeps one hour (360 samples at 10 s). A sample
//! is 16 bytes (a `u32` time and three `f32`), so a ring holds 5.6 KiB at
//! the default resolution: 20 pipelines cost about 115 KiB. The rate is the
//! growth of `events_read` between two samples divided by the time between
//! them; a new run (whose counter starts again at 0) counts from 0.
//!
//! This module owns the rings and the sampler. It must never keep more than
//! one hour per pipeline, never block the manager (it reads views only),
//! and keeps nothing across restarts: Prometheus is the long-term store.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::manager::PipelineManager;

/// How far back the rings reach.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// The default time between two samples.
pub const DEFAULT_RESOLUTION: Duration = Duration::from_secs(10);

/// One sample of a pipeline.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Unix time in seconds.
    pub t: u32,
    /// Events read per second since the previous sample.
    pub events_per_second: f32,
    /// Checkpoint lag in seconds.
    pub lag_seconds: f32,
    /// Checkpoint lag in source log bytes; NaN (JSON `null`) when not measured.
    pub lag_bytes: f32,
}

/// One pipeline's ring and what the next rate is computed from.
#[derive(Debug, Default)]
struct Ring {
    samples: VecDeque<Sample>,
    last_events: u64,
    last_at: Option<Instant>,
}

/// The rings of every pipeline. Cheap to clone.
#[derive(Clone)]
pub struct History {
    resolution: Duration,
    rings: Arc<Mutex<BTreeMap<String, Ring>>>,
}

impl Default for History {
    fn default() -> Self {
        History::new(DEFAULT_RESOLUTION)
    }
}

impl History {
    /// Empty rings sampled every `resolution` (at least one second).
    pub fn new(resolution: Duration) -> Self {
        History { resolution: resolution.max(Duration::from_secs(1)), rings: Arc::default() }
    }

    /// The time between two samples.
    pub fn resolution(&self) -> Duration {
        self.resolution
    }

    /// Most samples a ring keeps.
    pub fn capacity(&self) -> usize {
        (WINDOW.as_secs() / self.resolution.as_secs()).max(1) as usize
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Ring>> {
        self.rings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one sample of `pipeline` taken at `now`.
    pub fn record(&self, pipeline: &str, now: Instant, events_read: u64, lag_seconds: f64, lag_bytes: Option<u64>) {
        let capacity = self.capacity();
        let mut rings = self.lock();
        let ring = rings.entry(pipeline.to_string()).or_default();
        let rate = match ring.last_at {
            Some(at) if now > at => {
                // A new run counts from 0 again: its whole count is new.
                let grown = events_read.checked_sub(ring.last_events).unwrap_or(events_read);
                grown as f64 / (now - at).as_secs_f64()
            }
            _ => 0.0,
        };
        ring.last_events = events_read;
        ring.last_at = Some(now);
        if ring.samples.len() == capacity {
            ring.samples.pop_front();
        }
        ring.samples.push_back(Sample {
            t: Utc::now().timestamp().clamp(0, u32::MAX as i64) as u32,
            events_per_second: rate as f32,
            lag_seconds: lag_seconds as f32,
            lag_bytes: lag_bytes.map_or(f32::NAN, |b| b as f32),
        });
    }

    /// Drops the rings of pipelines not in `names`.
    pub fn retain(&self, names: &[String]) {
        self.lock().retain(|k, _| names.contains(k));
    }

    /// The samples of `pipeline`, oldest first (at most the last `last`).
    pub fn samples(&self, pipeline: &str, last: usize) -> Vec<Sample> {
        let rings = self.lock();
        let Some(ring) = rings.get(pipeline) else { return Vec::new() };
        let skip = ring.samples.len().saturating_sub(last);
        ring.samples.iter().skip(skip).copied().collect()
    }

    /// The samples of `pipeline` taken after unix time `since` (seconds),
    /// oldest first: what a console that already holds the older ones
    /// asks for on each poll. Filtered under the lock, so a poll copies
    /// only the new samples, not the whole hour.
    pub fn samples_since(&self, pipeline: &str, since: u32) -> Vec<Sample> {
        let rings = self.lock();
        let Some(ring) = rings.get(pipeline) else { return Vec::new() };
        let newer = ring.samples.iter().rev().take_while(|s| s.t > since).count();
        ring.samples.iter().skip(ring.samples.len() - newer).copied().collect()
    }

    /// The last `last` samples of `pipeline` merged into at most `points`
    /// (for sparklines): each point has the last time of its group, the
    /// mean rate and the highest lags (NaN bytes when none was measured).
    pub fn downsampled(&self, pipeline: &str, last: usize, points: usize) -> Vec<Sample> {
        let samples = self.samples(pipeline, last);
        let group = samples.len().div_ceil(points.max(1)).max(1);
        samples
            .chunks(group)
            .map(|g| Sample {
                t: g[g.len() - 1].t,
                events_per_second: g.iter().map(|s| s.events_per_second).sum::<f32>() / g.len() as f32,
                lag_seconds: g.iter().map(|s| s.lag_seconds).fold(0.0, f32::max),
                lag_bytes: g.iter().map(|s| s.lag_bytes).filter(|b| !b.is_nan()).reduce(f32::max).unwrap_or(f32::NAN),
            })
            .collect()
    }

    /// Samples every pipeline's view every resolution until `stop` fires.
    pub async fn run_sampler(self, manager: PipelineManager, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.resolution);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let views = manager.list();
            for v in &views {
                self.record(&v.name, now, v.events_read, v.lag_seconds, v.lag_bytes);
            }
            self.retain(&views.iter().map(|v| v.name.clone()).collect::<Vec<_>>());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_counter_growth_and_a_new_run_counts_from_zero() {
        let h = History::new(Duration::from_secs(10));
        let t0 = Instant::now();
        h.record("p", t0, 0, 0.0, None);
        h.record("p", t0 + Duration::from_secs(10), 1000, 1.5, Some(4096));
        h.record("p", t0 + Duration::from_secs(20), 300, 0.0, Some(0));
        let s = h.samples("p", usize::MAX);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].events_per_second, 0.0);
        assert_eq!(s[1].events_per_second, 100.0);
        assert_eq!(s[1].lag_seconds, 1.5);
        assert_eq!(s[1].lag_bytes, 4096.0);
        assert!(s[0].lag_bytes.is_nan());
        assert_eq!(serde_json::to_value(s[0]).unwrap()["lag_bytes"], serde_json::Value::Null);
        assert_eq!(s[2].events_per_second, 30.0, "a restarted run's counter starts at 0");
        assert_eq!(h.samples("p", 1)[0].t, s[2].t);
        let merged = h.downsampled("p", usize::MAX, 2);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].events_per_second, 50.0, "the mean of 0 and 100");
        assert_eq!((merged[0].lag_seconds, merged[0].lag_bytes), (1.5, 4096.0), "the highest lags");
        assert_eq!(merged[1].events_per_second, 30.0);
        assert_eq!(h.downsampled("p", usize::MAX, 10).len(), 3, "never more points than samples");
        assert!(h.samples("other", 10).is_empty());
    }

    #[test]
    fn samples_since_returns_only_later_samples() {
        let h = History::new(Duration::from_secs(1));
        let t0 = Instant::now();
        for (i, t) in [100u32, 101, 102, 103].into_iter().enumerate() {
            h.record("p", t0 + Duration::from_secs(i as u64), 0, i as f64, None);
            // `record` stamps the wall clock; pin the times for the test.
            h.lock().get_mut("p").unwrap().samples.back_mut().unwrap().t = t;
        }
        let since: Vec<u32> = h.samples_since("p", 101).iter().map(|s| s.t).collect();
        assert_eq!(since, vec![102, 103]);
        assert_eq!(h.samples_since("p", 99).len(), 4);
        assert!(h.samples_since("p", 103).is_empty());
        assert!(h.samples_since("other", 0).is_empty());
    }

    #[test]
    fn a_ring_keeps_one_hour_and_forgets_removed_pipelines() {
        let h = History::new(Duration::from_secs(10));
        assert_eq!(h.capacity(), 360);
        assert_eq!(std::mem::size_of::<Sample>(), 16, "a ring of 360 samples stays under 6 KiB");
        let t0 = Instant::now();
        for i in 0..400u64 {
            h.record("p", t0 + Duration::from_secs(i * 10), i * 10, 0.0, None);
        }
        assert_eq!(h.samples("p", usize::MAX).len(), 360);
        h.retain(&[]);
        assert!(h.samples("p", usize::MAX).is_empty());
        assert_eq!(History::new(Duration::ZERO).resolution(), Duration::from_secs(1));
    }
}
