//! One fetched credential ([`Slot`]): an IAM token, the keys of the metadata service,
//! of pod identity or of an agency. At most one fetch at a time; refreshed ahead of
//! expiry; never handed out when it would expire during a request; after a failed fetch,
//! the next one waits a growing backoff while the current value is used as long as it
//! is valid (README "Credentials").

use super::super::error::ApiError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// First wait after a failed fetch; doubles up to [`FETCH_BACKOFF_MAX`].
pub const FETCH_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between failed fetches.
pub const FETCH_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

/// A value as issued: how long it lives and how long before its end to refresh it.
pub struct Issued<T> {
    /// The credential.
    pub value: T,
    /// Valid for this long from now.
    pub lifetime: Duration,
    /// Refresh this long before it expires.
    pub margin: Duration,
    /// The expiry as the issuer wrote it, for logs.
    pub expires_at: String,
}

/// A value handed out, with the generation a 401 names to drop exactly this one.
pub struct Held<T> {
    /// The credential.
    pub value: Arc<T>,
    /// Counts up with every fetch.
    pub generation: u64,
    /// When it stops being valid.
    pub expires_at: Instant,
}

impl<T> Clone for Held<T> {
    fn clone(&self) -> Self {
        Held {
            value: self.value.clone(),
            generation: self.generation,
            expires_at: self.expires_at,
        }
    }
}

struct Current<T> {
    value: Arc<T>,
    refresh_at: Instant,
    expires_at: Instant,
}

struct State<T> {
    current: Option<Current<T>>,
    generation: u64,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<ApiError>,
}

/// One credential and the lock that makes its fetches single-flight.
pub struct Slot<T> {
    state: tokio::sync::Mutex<State<T>>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            state: tokio::sync::Mutex::new(State {
                current: None,
                generation: 0,
                failures: 0,
                retry_at: None,
                last_error: None,
            }),
        }
    }
}

impl<T> Slot<T> {
    /// The current value when it is due for no refresh; else `fetch` (one caller at a
    /// time: the others wait and take its result). A value is only handed out while it
    /// stays valid for `at_least` more (a request's timeout). A failed fetch keeps the
    /// current value while it is valid, and the next fetch waits out a backoff: meanwhile
    /// the failure is returned at once.
    pub async fn get<F, Fut>(&self, at_least: Duration, fetch: F) -> Result<Held<T>, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Issued<T>, ApiError>>,
    {
        let mut s = self.state.lock().await;
        let now = Instant::now();
        let usable = |s: &State<T>, now: Instant| {
            s.current
                .as_ref()
                .filter(|c| now + at_least < c.expires_at)
                .map(|c| Held {
                    value: c.value.clone(),
                    generation: s.generation,
                    expires_at: c.expires_at,
                })
        };
        if let Some(c) = &s.current
            && now < c.refresh_at
            && let Some(h) = usable(&s, now)
        {
            return Ok(h);
        }
        if let Some(at) = s.retry_at
            && now < at
        {
            return usable(&s, now).ok_or_else(|| {
                let e = s.last_error.clone().unwrap_or_else(|| {
                    ApiError::new(
                        "credentials",
                        "",
                        super::super::error::ApiErrorKind::NotSent,
                    )
                });
                e.not_retried(&format!(
                    "next attempt in {}s",
                    at.saturating_duration_since(now).as_secs().max(1)
                ))
            });
        }
        match fetch().await {
            Ok(issued) => {
                let now = Instant::now();
                s.generation += 1;
                s.failures = 0;
                s.retry_at = None;
                s.last_error = None;
                s.current = Some(Current {
                    value: Arc::new(issued.value),
                    refresh_at: now + issued.lifetime.saturating_sub(issued.margin),
                    expires_at: now + issued.lifetime,
                });
                usable(&s, now).ok_or_else(|| {
                    let mut e = ApiError::new(
                        "credentials",
                        "",
                        super::super::error::ApiErrorKind::Malformed,
                    );
                    e = e.with_message(format!(
                        "the credentials issued expire at {} (too soon for one request)",
                        issued.expires_at
                    ));
                    e
                })
            }
            Err(e) if !backs_off(&e) => usable(&s, Instant::now()).ok_or(e),
            Err(e) => {
                s.failures = s.failures.saturating_add(1);
                let wait = FETCH_BACKOFF_MIN
                    .saturating_mul(1 << (s.failures - 1).min(16))
                    .min(FETCH_BACKOFF_MAX);
                s.retry_at = Some(Instant::now() + wait);
                s.last_error = Some(e.clone());
                usable(&s, Instant::now()).ok_or(e)
            }
        }
    }

    /// After a 401 with `generation`: the next [`Slot::get`] fetches anew. Returns false
    /// when the value was already replaced (or a fetch is under way).
    pub fn invalidate(&self, generation: u64) -> bool {
        let Ok(mut s) = self.state.try_lock() else {
            return false;
        };
        if s.generation != generation {
            return false;
        }
        if let Some(c) = s.current.as_mut() {
            c.refresh_at = Instant::now();
            c.expires_at = Instant::now();
        }
        true
    }

    /// The value held now, valid or not, without fetching (`None` while a fetch holds
    /// the lock or before the first one).
    pub fn peek(&self) -> Option<Arc<T>> {
        let s = self.state.try_lock().ok()?;
        s.current.as_ref().map(|c| c.value.clone())
    }

    /// Whether a failed fetch left nothing valid: the last error, if so.
    pub fn unusable(&self) -> Option<ApiError> {
        let s = self.state.try_lock().ok()?;
        let valid = s
            .current
            .as_ref()
            .is_some_and(|c| Instant::now() < c.expires_at);
        if valid { None } else { s.last_error.clone() }
    }
}

/// Whether a failed fetch makes the next one wait. Not for authentication failures:
/// the key's gate already holds every request back (README "Credentials"), and its
/// error says so more clearly; not for requests that were never sent.
fn backs_off(e: &ApiError) -> bool {
    use super::super::error::ApiErrorKind as K;
    !matches!(
        e.kind,
        K::Unauthorized | K::AuthBackoff | K::NotSent | K::Aborted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::error::ApiErrorKind;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn issued(v: u32, secs: u64) -> Issued<u32> {
        Issued {
            value: v,
            lifetime: Duration::from_secs(secs),
            margin: Duration::from_secs(secs / 3),
            expires_at: "later".into(),
        }
    }

    fn failed() -> ApiError {
        ApiError::new("metadata", "http://x", ApiErrorKind::Connect).with_message("refused")
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_ahead_of_expiry_and_shares_one_fetch() {
        let slot = Arc::new(Slot::<u32>::default());
        let fetches = Arc::new(AtomicU32::new(0));
        let get = |slot: Arc<Slot<u32>>, fetches: Arc<AtomicU32>| async move {
            slot.get(Duration::from_secs(1), || async {
                let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(issued(n, 30))
            })
            .await
            .map(|h| *h.value)
        };
        let (a, b) = tokio::join!(
            get(slot.clone(), fetches.clone()),
            get(slot.clone(), fetches.clone())
        );
        assert_eq!((a.expect("a"), b.expect("b")), (1, 1));
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "one fetch for both");
        tokio::time::sleep(Duration::from_secs(19)).await;
        assert_eq!(get(slot.clone(), fetches.clone()).await.expect("cached"), 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            get(slot.clone(), fetches.clone()).await.expect("refreshed"),
            2
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_keeps_the_valid_value_then_backs_off() {
        let slot = Slot::<u32>::default();
        let ok = |v| move || async move { Ok(issued(v, 30)) };
        assert_eq!(
            *slot
                .get(Duration::from_secs(1), ok(1))
                .await
                .expect("first")
                .value,
            1
        );
        tokio::time::sleep(Duration::from_secs(21)).await;
        let r = slot
            .get(Duration::from_secs(1), || async { Err(failed()) })
            .await;
        assert_eq!(*r.expect("still valid").value, 1);
        // Not valid any more for a request: the failure, and no fetch during the backoff.
        tokio::time::sleep(Duration::from_millis(8_500)).await;
        let r = slot
            .get(Duration::from_secs(1), || async { Err(failed()) })
            .await;
        assert!(r.is_err(), "expires within the request timeout");
        let e = slot
            .get(Duration::from_secs(1), || async {
                panic!("no fetch in the backoff")
            })
            .await
            .map(|_| ())
            .expect_err("expired");
        assert!(e.to_string().contains("refused"), "{e}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            slot.unusable().is_some(),
            "expired, and the last fetch failed"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            *slot
                .get(Duration::from_secs(1), ok(2))
                .await
                .expect("again")
                .value,
            2
        );
        assert!(slot.unusable().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_drops_only_the_named_generation() {
        let slot = Slot::<u32>::default();
        let h = slot
            .get(Duration::ZERO, || async { Ok(issued(1, 300)) })
            .await
            .expect("first");
        assert!(!slot.invalidate(h.generation + 1));
        assert!(slot.invalidate(h.generation));
        let h2 = slot
            .get(Duration::ZERO, || async { Ok(issued(2, 300)) })
            .await
            .expect("refetched");
        assert_eq!((*h2.value, h2.generation), (2, h.generation + 1));
    }
}
