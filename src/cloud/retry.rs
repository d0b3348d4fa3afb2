//! When to try again and how long to wait: exponential backoff with full jitter (a
//! uniformly random wait between zero and `base · 2^n`, capped), and `Retry-After` in
//! either of its forms (seconds or an HTTP date). Pure functions; the client does the
//! sleeping, through `tokio::time`, without holding a concurrency permit.

use chrono::{DateTime, Utc};
use rand::Rng;
use std::time::Duration;

/// First backoff ceiling.
pub const BASE: Duration = Duration::from_millis(200);
/// Largest backoff ceiling.
pub const CAP: Duration = Duration::from_secs(30);
/// Longest `Retry-After` honoured; a longer one is shortened to this, so one hostile or
/// confused answer cannot stall a poll cycle for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first wait.
    pub base: Duration,
    /// Largest ceiling.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: BASE,
            cap: CAP,
        }
    }
}

impl Backoff {
    /// The ceiling of the wait before retry number `retry` (0 = the first retry):
    /// `min(cap, base · 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before retry number `retry`: uniform in `[0, ceiling(retry)]`, but never
    /// shorter than `retry_after` (itself capped at [`MAX_RETRY_AFTER`]).
    pub fn delay<R: Rng + ?Sized>(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        rng: &mut R,
    ) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let jittered = Duration::from_nanos(rng.random_range(0..=nanos));
        match retry_after {
            Some(ra) => jittered.max(ra.min(MAX_RETRY_AFTER)),
            None => jittered,
        }
    }
}

/// Parses a `Retry-After` value: delta-seconds (`"120"`) or an HTTP date
/// (`"Wed, 21 Oct 2026 07:28:00 GMT"`), relative to `now`. A date in the past is zero;
/// anything else unparseable is `None`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    // Fractional seconds are not in RFC 9110, but some servers send them.
    if let Ok(f) = v.parse::<f64>() {
        return (f.is_finite() && f >= 0.0).then(|| Duration::from_secs_f64(f.min(1e9)));
    }
    // IMF-fixdate (via RFC 2822), then the obsolete RFC 850 and asctime forms.
    let when = DateTime::parse_from_rfc2822(v)
        .ok()
        .map(|d| d.with_timezone(&Utc))
        .or_else(|| {
            ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
                .iter()
                .find_map(|f| chrono::NaiveDateTime::parse_from_str(v, f).ok())
                .map(|n| n.and_utc())
        })?;
    Some((when - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rand::SeedableRng;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
            .single()
            .expect("valid date")
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(parse_retry_after("3", now()), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now()),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("-1", now()), None);
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("", now()), None);
    }

    #[test]
    fn retry_after_http_dates() {
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 12:00:07 GMT", now()),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Friday, 27-Nov-26 12:00:09 GMT", now()),
            Some(Duration::from_secs(9))
        );
        assert_eq!(
            parse_retry_after("Fri Nov 27 12:00:02 2026", now()),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 11:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn ceiling_doubles_from_base_to_cap() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(0), Duration::from_millis(200));
        assert_eq!(b.ceiling(1), Duration::from_millis(400));
        assert_eq!(b.ceiling(4), Duration::from_millis(3200));
        assert_eq!(b.ceiling(8), Duration::from_secs(30));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn full_jitter_stays_within_bounds_and_spreads() {
        let b = Backoff::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for retry in 0..12 {
            let ceiling = b.ceiling(retry);
            let samples: Vec<Duration> = (0..500).map(|_| b.delay(retry, None, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= ceiling), "retry {retry}");
            // Full jitter: both halves of the range are used.
            assert!(samples.iter().any(|d| *d < ceiling / 2), "retry {retry}");
            assert!(samples.iter().any(|d| *d > ceiling / 2), "retry {retry}");
        }
    }

    #[test]
    fn retry_after_is_a_floor_and_is_capped() {
        let b = Backoff::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let d = b.delay(0, Some(Duration::from_secs(2)), &mut rng);
            assert_eq!(d, Duration::from_secs(2));
            let d = b.delay(10, Some(Duration::from_secs(2)), &mut rng);
            assert!(d >= Duration::from_secs(2) && d <= CAP);
        }
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(86_400)), &mut rng),
            MAX_RETRY_AFTER
        );
    }

    #[tokio::test(start_paused = true)]
    async fn paused_time_backoff_sleeps_stay_within_their_ceilings() {
        use rand::SeedableRng;
        let b = Backoff::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let start = tokio::time::Instant::now();
        let mut bound = Duration::ZERO;
        for retry in 0..6 {
            let d = b.delay(retry, None, &mut rng);
            assert!(d <= b.ceiling(retry));
            bound += b.ceiling(retry);
            tokio::time::sleep(d).await;
        }
        assert!(start.elapsed() <= bound);
        // Retry-After is honoured even when the jittered wait would be shorter.
        let before = tokio::time::Instant::now();
        tokio::time::sleep(b.delay(0, Some(Duration::from_secs(7)), &mut rng)).await;
        assert!(before.elapsed() >= Duration::from_secs(7));
    }
}
