//! How busy each served model is: `regserve_saturation{model}` = (requests running + requests
//! waiting for a session) / sessions, averaged over time — 1.0 means every session busy all the
//! time, above 1 requests queue. The HorizontalPodAutoscaler of `deploy/kubernetes` scales on it.
//! A leaf, like [`crate::metrics`]: the session pool counts into a [`Load`], the manager turns it
//! into the gauge once a second with an [`Ewma`].
//!
//! The hot path is two compare-and-swaps per request (arrive, leave) and no lock: a [`Load`] keeps
//! the number of requests in the pool and the time of the last change in one atomic word, and
//! adds `count × time since the last change` to an atomic integral at each change. The integral
//! over a tick divided by the tick is the exact time-weighted mean count — a request that came
//! and went between two ticks counts for the time it was there, which a sample of the count at
//! tick (or scrape) time would miss or overweight. Ticks feed an exponentially weighted moving
//! average with a 10 s time constant, so a one-second burst moves the gauge a tenth of the way
//! and a sustained load moves it all the way in ~30 s: smooth enough for an autoscaler.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Bits of the state word holding the time of the last change, in µs since the [`Load`]'s
/// epoch, wrapping (2^40 µs ≈ 12.7 days; differences are read modulo that, so an interval
/// between two changes while requests are in the pool must stay under half of it — requests
/// have deadlines far shorter). The other 24 bits hold the count.
const TIME_BITS: u32 = 40;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
const MAX_COUNT: u64 = (1 << (64 - TIME_BITS)) - 1;

/// The time constant of the moving average.
pub const TIME_CONSTANT: Duration = Duration::from_secs(10);
/// How often the manager folds each [`Load`] into the gauge.
pub const TICK: Duration = Duration::from_secs(1);

/// Requests in one model's session pools (queued or running), and their integral over time.
/// Shared by every loaded version of the model (see [`load_of`]).
pub struct Load {
    /// count << TIME_BITS | time of the last change (µs since `epoch`, wrapping).
    state: AtomicU64,
    /// ∫ count dt in request·µs, wrapping (readers take differences).
    area: AtomicU64,
    epoch: Instant,
}

impl Default for Load {
    fn default() -> Self {
        Load { state: AtomicU64::new(0), area: AtomicU64::new(0), epoch: Instant::now() }
    }
}

/// `later - earlier` on the wrapping clock; 0 when `later` is in fact earlier (two threads read
/// the clock in one order and changed the state in the other).
fn elapsed(earlier: u64, later: u64) -> u64 {
    let d = later.wrapping_sub(earlier) & TIME_MASK;
    if d > TIME_MASK / 2 {
        0
    } else {
        d
    }
}

impl Load {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 & TIME_MASK
    }

    /// A request entered the pool; it leaves when the guard is dropped.
    pub fn arrive(self: &Arc<Self>) -> LoadGuard {
        self.change_at(self.now_us(), true);
        LoadGuard { load: self.clone() }
    }

    /// Add or remove one request at time `now` (µs on this load's clock).
    fn change_at(&self, now: u64, arrive: bool) {
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (count, last) = (current >> TIME_BITS, current & TIME_MASK);
            let dt = elapsed(last, now);
            let next_count = if arrive { (count + 1).min(MAX_COUNT) } else { count.saturating_sub(1) };
            // Never move the last-change time backwards while requests are counted (an empty
            // pool adds nothing, however long it was idle: take the new time as it is).
            let at = if count > 0 && dt == 0 && now != last { last } else { now };
            let next = next_count << TIME_BITS | at;
            match self.state.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    self.area.fetch_add(count.wrapping_mul(dt), Ordering::Relaxed);
                    return;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Requests in the pool now.
    pub fn count(&self) -> u64 {
        self.state.load(Ordering::Relaxed) >> TIME_BITS
    }

    /// (now, ∫ count dt up to now), both on this load's clock.
    pub fn integral(&self) -> (u64, u64) {
        self.integral_at(self.now_us())
    }

    fn integral_at(&self, now: u64) -> (u64, u64) {
        // The area before the state: a change landing in between is counted at the next read.
        let area = self.area.load(Ordering::Relaxed);
        let state = self.state.load(Ordering::Acquire);
        let (count, last) = (state >> TIME_BITS, state & TIME_MASK);
        (now, area.wrapping_add(count.wrapping_mul(elapsed(last, now))))
    }
}

/// One request in a pool: dropping it (answered, failed, or given up) takes it out.
pub struct LoadGuard {
    load: Arc<Load>,
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.load.change_at(self.load.now_us(), false);
    }
}

/// The process-wide [`Load`] of a served model, by name (every version of it shares one).
/// Taken when a version loads, not per request.
pub fn load_of(model: &str) -> Arc<Load> {
    static LOADS: OnceLock<Mutex<HashMap<String, Arc<Load>>>> = OnceLock::new();
    let mut loads = LOADS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    loads.entry(model.to_string()).or_default().clone()
}

/// The moving average of one model's saturation, fed a [`Load`]'s integral at each tick.
#[derive(Debug, Clone)]
pub struct Ewma {
    time_constant_us: f64,
    last: Option<(u64, u64)>,
    value: f64,
}

impl Default for Ewma {
    fn default() -> Self {
        Ewma::new(TIME_CONSTANT)
    }
}

impl Ewma {
    pub fn new(time_constant: Duration) -> Ewma {
        Ewma { time_constant_us: time_constant.as_micros() as f64, last: None, value: 0.0 }
    }

    /// Fold in the load since the previous call: `(now, integral)` from [`Load::integral`],
    /// `sessions` of the version in service (`None`: nothing loaded, the load is 0 anyway).
    /// Returns the new average.
    pub fn update(&mut self, (now, area): (u64, u64), sessions: Option<usize>) -> f64 {
        let Some((then, area_then)) = self.last.replace((now, area)) else {
            return self.value;
        };
        let dt = elapsed(then, now);
        if dt == 0 {
            return self.value;
        }
        let mean_count = (area.wrapping_sub(area_then)) as f64 / dt as f64;
        let sample = mean_count / sessions.unwrap_or(1).max(1) as f64;
        let weight = 1.0 - (-(dt as f64) / self.time_constant_us).exp();
        self.value += (sample - self.value) * weight;
        self.value
    }

    pub fn value(&self) -> f64 {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn load() -> Load {
        Load::default()
    }

    #[test]
    fn the_integral_is_count_times_time() {
        let l = load();
        l.change_at(0, true);
        l.change_at(1_000, true);
        l.change_at(3_000, false);
        assert_eq!(l.count(), 1);
        l.change_at(4_000, false);
        assert_eq!(l.count(), 0);
        // 1 × 1 ms + 2 × 2 ms + 1 × 1 ms, then nothing
        assert_eq!(l.integral_at(5_000), (5_000, 6_000));
        // A request still in the pool counts up to the moment of the read.
        l.change_at(6_000, true);
        assert_eq!(l.integral_at(6_500).1, 6_500);
    }

    #[test]
    fn the_clock_wraps_and_never_runs_backwards() {
        let l = load();
        l.change_at(TIME_MASK - 499, true);
        l.change_at(500, false); // 1,000 µs later, across the wrap
        assert_eq!(l.integral_at(600).1, 1_000);
        // A change stamped earlier than the last one adds nothing and keeps the later time.
        l.change_at(1_000, true);
        l.change_at(900, true);
        assert_eq!(l.count(), 2);
        assert_eq!(l.integral_at(1_100).1, 1_000 + 2 * 100);
    }

    #[test]
    fn a_long_idle_pool_counts_its_next_request() {
        let l = load();
        let week = 7 * 24 * 3600 * S; // more than half the wrapping clock
        l.change_at(week, true);
        l.change_at(week + 1_000, false);
        assert_eq!(l.integral_at(week + 2_000).1, 1_000);
    }

    fn tick(e: &mut Ewma, l: &Load, now: u64, sessions: usize) -> f64 {
        e.update(l.integral_at(now), Some(sessions))
    }

    #[test]
    fn a_steady_load_converges_to_running_plus_waiting_over_sessions() {
        // 2 sessions, 4 requests in the pool all the time (2 running, 2 waiting): 2.0.
        let l = load();
        for _ in 0..4 {
            l.change_at(0, true);
        }
        let mut e = Ewma::default();
        assert_eq!(tick(&mut e, &l, 0, 2), 0.0);
        let mut v = 0.0;
        for s in 1..=60 {
            v = tick(&mut e, &l, s * S, 2);
        }
        assert!((v - 2.0).abs() < 0.01, "{v}");
        // One time constant after the load stops, e^-1 of it is left.
        for _ in 0..4 {
            l.change_at(60 * S, false);
        }
        for s in 61..=70 {
            v = tick(&mut e, &l, s * S, 2);
        }
        assert!((v - 2.0 * (-1.0f64).exp()).abs() < 0.01, "{v}");
    }

    #[test]
    fn requests_between_ticks_count_for_the_time_they_were_there() {
        // Each second: 2 sessions busy for the first half, idle for the second. A sample of the
        // count at tick time would read 0 every time; the mean is 0.5.
        let l = load();
        let mut e = Ewma::default();
        tick(&mut e, &l, 0, 2);
        let mut v = 0.0;
        for s in 0..60 {
            l.change_at(s * S, true);
            l.change_at(s * S, true);
            l.change_at(s * S + S / 2, false);
            l.change_at(s * S + S / 2, false);
            v = tick(&mut e, &l, (s + 1) * S, 2);
        }
        assert!((v - 0.5).abs() < 0.01, "{v}");
    }

    #[test]
    fn a_short_burst_moves_the_average_a_little() {
        // 1 s of 8 requests on 1 session (saturation 8), then idle: the gauge moves 1 - e^-0.1.
        let l = load();
        let mut e = Ewma::default();
        tick(&mut e, &l, 0, 1);
        for _ in 0..8 {
            l.change_at(0, true);
        }
        for _ in 0..8 {
            l.change_at(S, false);
        }
        let v = tick(&mut e, &l, S, 1);
        assert!((v - 8.0 * (1.0 - (-0.1f64).exp())).abs() < 1e-9, "{v}");
        // Irregular ticks weigh by their length.
        let v2 = tick(&mut e, &l, 11 * S, 1);
        assert!((v2 - v * (-1.0f64).exp()).abs() < 1e-9, "{v2}");
    }

    #[test]
    fn concurrent_arrivals_and_departures_balance() {
        let l = Arc::new(load());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let g = l.arrive();
                        std::hint::black_box(&g);
                        drop(g);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(l.count(), 0);
        let (_, a1) = l.integral();
        std::thread::sleep(Duration::from_millis(20));
        let (_, a2) = l.integral();
        assert_eq!(a1, a2, "an empty pool adds nothing to the integral");
    }

    #[test]
    fn loads_are_shared_by_name() {
        let a = load_of("saturation-test-model");
        let b = load_of("saturation-test-model");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &load_of("saturation-test-other")));
    }
}
