//! The request-rate limit shared by every request of every target
//! (`poll.max_requests_per_second`).
//!
//! A token bucket of N tokens in which a token comes back `1 s + SLACK` after it was
//! taken. A burst of N may go at once (a quiet daemon wakes once per burst, not once per
//! request), and at most N grants fall in any window of `1 s + SLACK`. The slack is for
//! the receiver: a gateway counts arrival times, and a burst delayed a little more than
//! the next one would otherwise land in the same one-second window as it (seen as 47–52
//! arrivals in a second at a limit of 40 without it). It costs 2% of throughput.
//!
//! Grants are handed out in arrival order: each caller reserves its slot under a lock and
//! then sleeps until it, so waiting callers never spin or overtake one another.
//! Scheduling is through `tokio::time`, so paused-time tests are exact.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How much the requests' network delays may vary without a one-second window at the
/// receiver seeing more than N.
pub const SLACK: Duration = Duration::from_millis(20);
const WINDOW: Duration = Duration::from_secs(1);
const PERIOD: Duration = WINDOW.saturating_add(SLACK);

/// At most `per_second` grants in any window of one second plus [`SLACK`].
#[derive(Debug)]
pub struct RateLimiter {
    per_second: usize,
    /// The last `per_second` grant times, oldest first (some may lie in the future:
    /// reserved by callers that are still waiting).
    grants: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    /// A limiter for `per_second` requests per second; `None` for 0 (unlimited).
    pub fn new(per_second: u32) -> Option<RateLimiter> {
        (per_second > 0).then(|| RateLimiter {
            per_second: per_second as usize,
            grants: Mutex::new(VecDeque::with_capacity(per_second as usize)),
        })
    }

    /// The configured rate.
    pub fn per_second(&self) -> u32 {
        u32::try_from(self.per_second).unwrap_or(u32::MAX)
    }

    /// Waits until a request may be sent. Cancel-safe: a caller dropped while waiting
    /// merely wastes its slot (the limit only gets stricter).
    pub async fn acquire(&self) {
        let now = Instant::now();
        let slot = self.reserve(now);
        // A slot that is already due needs no timer: tokio rounds a deadline up to the
        // next millisecond, so sleeping until `now` would cost a wake-up and 1 ms.
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
    }

    /// Reserves the earliest slot at or after `now` that keeps every window of one second
    /// plus the slack at `per_second` grants or fewer.
    fn reserve(&self, now: Instant) -> Instant {
        let mut g = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        while g.front().is_some_and(|t| *t + PERIOD <= now) {
            g.pop_front();
        }
        // Keep the list sorted: never grant before an earlier reservation.
        let mut slot = g.back().map_or(now, |b| (*b).max(now));
        if g.len() >= self.per_second
            && let Some(oldest) = g.pop_front()
        {
            slot = slot.max(oldest + PERIOD);
        }
        g.push_back(slot);
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Most tests drive the slot arithmetic with synthetic instants; the paused-time test
    // at the end runs the real `acquire` under tokio's virtual clock.

    fn max_in_any_window(times: &mut [Instant]) -> usize {
        times.sort();
        let mut best = 0;
        for (i, start) in times.iter().enumerate() {
            let n = times[i..]
                .iter()
                .take_while(|t| **t < *start + WINDOW)
                .count();
            best = best.max(n);
        }
        best
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn zero_is_unlimited() {
        assert!(RateLimiter::new(0).is_none());
        assert_eq!(RateLimiter::new(5).map(|r| r.per_second()), Some(5));
    }

    #[test]
    fn never_more_than_n_in_any_one_second_window() {
        let t0 = Instant::now();
        for n in [1u32, 3, 10, 25, 40] {
            let rl = RateLimiter::new(n).expect("limited");
            let arrivals: Vec<Instant> = (0..(u64::from(n) * 5 + 2))
                .map(|i| t0 + ms(i * 37 % 300 + i / 3))
                .collect();
            let mut sorted = arrivals.clone();
            sorted.sort();
            let mut grants: Vec<Instant> = sorted.iter().map(|a| rl.reserve(*a)).collect();
            for (a, g) in sorted.iter().zip(&grants) {
                assert!(g >= a, "granted before arrival");
            }
            assert!(max_in_any_window(&mut grants) <= n as usize, "n = {n}");
        }
    }

    #[test]
    fn delays_varying_less_than_the_slack_keep_the_receiver_within_the_rate() {
        let rl = RateLimiter::new(40).expect("limited");
        let t0 = Instant::now();
        // The first request of each burst is delayed by 19 ms more than the others.
        let mut arrivals: Vec<Instant> = (0..400u64)
            .map(|i| rl.reserve(t0) + if i % 40 == 0 { ms(19) } else { ms(0) })
            .collect();
        assert_eq!(max_in_any_window(&mut arrivals), 40);
    }

    #[test]
    fn a_burst_of_n_goes_at_once_then_waits_a_period() {
        let rl = RateLimiter::new(4).expect("limited");
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(rl.reserve(t0), t0);
        }
        assert_eq!(rl.reserve(t0), t0 + PERIOD);
        assert_eq!(rl.reserve(t0 + ms(10)), t0 + PERIOD);
        // Reservations stay in order even for a caller that arrives later.
        assert_eq!(rl.reserve(t0 + ms(500)), t0 + PERIOD);
        assert_eq!(rl.reserve(t0 + ms(500)), t0 + PERIOD);
        assert_eq!(rl.reserve(t0 + ms(500)), t0 + PERIOD * 2);
    }

    #[test]
    fn sparse_requests_are_not_delayed() {
        let rl = RateLimiter::new(2).expect("limited");
        let t0 = Instant::now();
        for i in 0..20 {
            let at = t0 + ms(600 * i);
            assert_eq!(rl.reserve(at), at);
        }
    }

    #[test]
    fn steady_overload_is_paced_at_the_rate() {
        let rl = RateLimiter::new(10).expect("limited");
        let t0 = Instant::now();
        let mut grants: Vec<Instant> = (0..1000).map(|i| rl.reserve(t0 + ms(i))).collect();
        assert_eq!(max_in_any_window(&mut grants), 10);
        // 1000 requests arriving 1 ms apart at 10 per 1.02 s: request k·10+j goes at
        // k·1.02 s + j ms.
        assert_eq!(
            grants.last().expect("some").duration_since(t0),
            PERIOD * 99 + ms(9)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn paused_time_concurrent_callers_never_exceed_the_rate() {
        let rl = std::sync::Arc::new(RateLimiter::new(40).expect("limited"));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..500 {
            let rl = rl.clone();
            tasks.push(tokio::spawn(async move {
                rl.acquire().await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.expect("task"));
        }
        assert_eq!(max_in_any_window(&mut times), 40);
        // 500 at 40/s: the first 40 at once, the last batch after 12 periods.
        let took = times.iter().max().expect("some").duration_since(start);
        assert_eq!(took, PERIOD * 12);
    }
}
