//! Delays worth watching (an action waiting to start, a failure waiting to
//! be noticed, an incident waiting to be repaired), as Prometheus
//! histograms that also keep their count and sum for `/metrics`' JSON (the
//! histogram does not give them back).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// A histogram of delays in seconds, with its count and sum.
pub struct DelayHistogram {
    histogram: Histogram,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl DelayHistogram {
    /// Buckets doubling from `first_bucket_secs`, `buckets` of them.
    pub fn new(first_bucket_secs: f64, buckets: u16) -> Self {
        Self {
            histogram: Histogram::new(exponential_buckets(first_bucket_secs, 2.0, buckets)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one delay.
    pub fn observe(&self, delay: Duration) {
        self.histogram.observe(delay.as_secs_f64());
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// A handle on the histogram, to register for the text rendering.
    pub fn histogram(&self) -> Histogram {
        self.histogram.clone()
    }

    /// Delays recorded, and their sum in seconds.
    pub fn totals(&self) -> (u64, f64) {
        (
            self.count.load(Ordering::Relaxed),
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}
