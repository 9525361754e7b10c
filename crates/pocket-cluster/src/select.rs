//! Selection policies: which of the eligible instances gets a task.
//!
//! The pool filters first (agent, capabilities, status, health, open breakers, free slots);
//! a policy only ranks what is left, so both policies are pure functions of the candidates'
//! load and health and a random generator, and are tested with a seeded one.

use crate::config::Selection;

/// What a policy sees of one eligible instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Runs in flight.
    pub in_flight: u32,
    /// Runs it takes at once.
    pub capacity: u32,
    /// Health, 0 to 100.
    pub health: u32,
}

impl Candidate {
    /// Load in percent: in-flight runs over capacity.
    pub fn load(&self) -> f64 {
        if self.capacity == 0 {
            100.0
        } else {
            f64::from(self.in_flight) * 100.0 / f64::from(self.capacity)
        }
    }

    /// Free slots.
    pub fn free(&self) -> u32 {
        self.capacity.saturating_sub(self.in_flight)
    }

    /// The seed's weight: `(100 − load%) + health + 10 × free slots`.
    pub fn weight(&self) -> f64 {
        (100.0 - self.load()).max(0.0) + f64::from(self.health) + 10.0 * f64::from(self.free())
    }
}

/// Picks one candidate's index with `policy`; `None` only when there are none.
///
/// ```
/// use pocket_cluster::select::{Candidate, pick};
/// use pocket_cluster::Selection;
///
/// let idle = Candidate { in_flight: 0, capacity: 4, health: 100 };
/// let full = Candidate { in_flight: 3, capacity: 4, health: 100 };
/// let mut rng = fastrand::Rng::with_seed(7);
/// // With two candidates, power of two choices always compares both.
/// assert_eq!(pick(Selection::P2c, &[full, idle], &mut rng), Some(1));
/// ```
pub fn pick(policy: Selection, candidates: &[Candidate], rng: &mut fastrand::Rng) -> Option<usize> {
    match candidates.len() {
        0 => None,
        1 => Some(0),
        n => Some(match policy {
            Selection::P2c => {
                let a = rng.usize(..n);
                let b = (a + 1 + rng.usize(..n - 1)) % n;
                if better(&candidates[b], &candidates[a]) {
                    b
                } else {
                    a
                }
            }
            Selection::Weighted => weighted(candidates, rng),
        }),
    }
}

/// Whether `x` should win over `y` in power of two choices: lower load, then higher health,
/// then more free slots.
fn better(x: &Candidate, y: &Candidate) -> bool {
    // Compare in_flight/capacity exactly by cross-multiplying.
    let lx = u64::from(x.in_flight) * u64::from(y.capacity.max(1));
    let ly = u64::from(y.in_flight) * u64::from(x.capacity.max(1));
    (lx, y.health, y.free()) < (ly, x.health, x.free())
}

fn weighted(candidates: &[Candidate], rng: &mut fastrand::Rng) -> usize {
    let total: f64 = candidates.iter().map(Candidate::weight).sum();
    if total <= 0.0 {
        return rng.usize(..candidates.len());
    }
    let mut draw = rng.f64() * total;
    for (i, c) in candidates.iter().enumerate() {
        let w = c.weight();
        if draw < w {
            return i;
        }
        draw -= w;
    }
    candidates.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(in_flight: u32, capacity: u32, health: u32) -> Candidate {
        Candidate {
            in_flight,
            capacity,
            health,
        }
    }

    #[test]
    fn weight_follows_the_seed() {
        // load 50 %, health 80, 5 free slots: 50 + 80 + 50.
        assert_eq!(c(5, 10, 80).weight(), 180.0);
        assert_eq!(c(0, 10, 100).weight(), 300.0);
        assert_eq!(c(10, 10, 100).weight(), 100.0);
    }

    #[test]
    fn p2c_never_picks_the_most_loaded_of_three_when_others_are_idle() {
        let cands = [c(0, 10, 100), c(9, 10, 100), c(0, 10, 100)];
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..1000 {
            assert_ne!(pick(Selection::P2c, &cands, &mut rng), Some(1));
        }
    }

    #[test]
    fn p2c_compares_load_by_ratio_then_health() {
        // 2/4 is less loaded than 6/10.
        assert!(better(&c(2, 4, 50), &c(6, 10, 100)));
        // Equal load: the healthier wins.
        assert!(better(&c(1, 2, 90), &c(5, 10, 80)));
        assert!(!better(&c(1, 2, 80), &c(1, 2, 80)));
    }

    #[test]
    fn p2c_picks_two_distinct_candidates_uniformly() {
        let cands = [c(0, 1, 100); 4];
        let mut rng = fastrand::Rng::with_seed(3);
        let mut seen = [0u32; 4];
        for _ in 0..40_000 {
            seen[pick(Selection::P2c, &cands, &mut rng).unwrap()] += 1;
        }
        for n in seen {
            assert!((9_000..11_000).contains(&n), "{seen:?}");
        }
    }
}
