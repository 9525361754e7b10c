//! Sampling of log events: keeps a share of the events below ERROR, never an error.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Decides which events to keep, at a rate, the same way every time for a seed.
///
/// Decision `n` (counting the events the sampler was asked about) is a hash of the seed and
/// `n`, so a single-threaded sequence of events is sampled identically run after run; with
/// several threads the *set* of decisions is the same, their assignment to events follows
/// the interleaving.
///
/// ```
/// use pocket_monitor::logging::Sampler;
/// use tracing::Level;
///
/// let a = Sampler::new(0.3, 7);
/// let b = Sampler::new(0.3, 7);
/// let run = |s: &Sampler| (0..100).map(|_| s.keep(&Level::INFO)).collect::<Vec<_>>();
/// assert_eq!(run(&a), run(&b));
/// assert!(Sampler::new(0.0, 7).keep(&Level::ERROR)); // errors always pass
/// ```
#[derive(Debug)]
pub struct Sampler {
    rate: f64,
    threshold: u64,
    seed: u64,
    next: AtomicU64,
}

impl Sampler {
    /// Keeps `rate` (clamped to 0.0–1.0) of the events below ERROR.
    pub fn new(rate: f64, seed: u64) -> Self {
        let rate = if rate.is_nan() {
            1.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        Self {
            rate,
            // Saturating float-to-int cast: 1.0 maps to u64::MAX (kept by the rate check).
            threshold: (rate * u64::MAX as f64) as u64,
            seed,
            next: AtomicU64::new(0),
        }
    }

    /// The rate in force.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Whether to keep an event of this level.
    #[inline]
    pub fn keep(&self, level: &Level) -> bool {
        if *level == Level::ERROR || self.rate >= 1.0 {
            return true;
        }
        if self.rate <= 0.0 {
            return false;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        splitmix64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) < self.threshold
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A layer that vetoes sampled-out events for the whole subscriber (every sink sees the same
/// events). Spans are never sampled.
#[derive(Debug)]
pub struct SamplingLayer {
    sampler: Sampler,
}

impl SamplingLayer {
    /// A layer around this sampler.
    pub fn new(sampler: Sampler) -> Self {
        Self { sampler }
    }
}

impl<S: Subscriber> Layer<S> for SamplingLayer {
    #[inline]
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        self.sampler.keep(event.metadata().level())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_roughly_kept_and_errors_never_dropped() {
        let s = Sampler::new(0.25, 42);
        let kept = (0..10_000).filter(|_| s.keep(&Level::INFO)).count();
        assert!((2_200..2_800).contains(&kept), "{kept}");
        let s = Sampler::new(0.0, 42);
        assert!((0..1000).all(|_| s.keep(&Level::ERROR)));
        assert!((0..1000).all(|_| !s.keep(&Level::WARN)));
    }

    #[test]
    fn seeds_differ() {
        let run = |seed| {
            let s = Sampler::new(0.5, seed);
            (0..64).map(|_| s.keep(&Level::DEBUG)).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
