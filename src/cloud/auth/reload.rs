//! Secrets from `*_file` that are re-read when the files change ([`Reloading`]): all of
//! one method's files together, once they have been quiet for a second, so a rotation
//! that rewrites several files (a Kubernetes Secret update swaps them all at once) is
//! one switch from the old set to the new one (README "Credentials").

use crate::config::{ConfigError, SecretSource};
use secrecy::SecretString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How long the files must be unchanged before a change is taken.
pub const QUIET: Duration = Duration::from_secs(1);
/// How often the files are looked at, at most.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

type Loader<T> = Box<dyn Fn() -> Result<T, ConfigError> + Send + Sync>;

/// What identifies one file's content without reading it.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

/// A secret value (or several read together) and the files it came from.
pub struct Reloading<T> {
    files: Vec<PathBuf>,
    load: Loader<T>,
    state: Mutex<State<T>>,
}

struct State<T> {
    value: Arc<T>,
    generation: u64,
    stamps: Vec<Option<Stamp>>,
    checked: Option<tokio::time::Instant>,
    /// The stamps of a set that failed to load, so the warning is logged once.
    failed: Option<Vec<Option<Stamp>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reloading<SecretString> {
    /// One secret, loaded now and again when its file changes.
    pub fn secret(source: &SecretSource) -> Result<Reloading<SecretString>, ConfigError> {
        let s = source.clone();
        Reloading::new(&[source], move || s.load())
    }
}

impl<T> Reloading<T> {
    /// Loads the value now (an error names the variable or file) and remembers the file
    /// sources among `sources` to watch.
    pub fn new(
        sources: &[&SecretSource],
        load: impl Fn() -> Result<T, ConfigError> + Send + Sync + 'static,
    ) -> Result<Reloading<T>, ConfigError> {
        let value = load()?;
        Reloading::new_unloaded(sources, Box::new(load), value)
    }

    /// The same, starting with `value` instead of loading it now.
    pub fn starting_with(
        value: T,
        sources: &[&SecretSource],
        load: impl Fn() -> Result<T, ConfigError> + Send + Sync + 'static,
    ) -> Result<Reloading<T>, ConfigError> {
        let r = Reloading::new_unloaded(sources, Box::new(load), value)?;
        Ok(r)
    }

    fn new_unloaded(
        sources: &[&SecretSource],
        load: Loader<T>,
        value: T,
    ) -> Result<Reloading<T>, ConfigError> {
        let mut files = Vec::new();
        for s in sources {
            if let Some(p) = s.file_path()? {
                files.push(p);
            }
        }
        let stamps = stamps(&files);
        Ok(Reloading {
            files,
            load,
            state: Mutex::new(State {
                value: Arc::new(value),
                generation: 0,
                stamps,
                checked: None,
                failed: None,
            }),
        })
    }

    /// A value that never changes (tests).
    pub fn fixed(value: T) -> Reloading<T> {
        let never = Box::new(|| {
            Err(ConfigError::Secret {
                source_name: "a fixed value".into(),
                message: "cannot be re-read".into(),
            })
        });
        Reloading {
            files: Vec::new(),
            load: never,
            state: Mutex::new(State {
                value: Arc::new(value),
                generation: 0,
                stamps: Vec::new(),
                checked: None,
                failed: None,
            }),
        }
    }

    /// Whether any source is a file.
    pub fn watches_files(&self) -> bool {
        !self.files.is_empty()
    }

    /// The current value and its generation, after taking a change of the files (looked
    /// at most every [`CHECK_EVERY`]).
    pub fn current(&self) -> (Arc<T>, u64) {
        let mut s = lock(&self.state);
        if !self.files.is_empty() {
            let now = tokio::time::Instant::now();
            if s.checked
                .is_none_or(|t| now.duration_since(t) >= CHECK_EVERY)
            {
                s.checked = Some(now);
                self.take_change(&mut s);
            }
        }
        (s.value.clone(), s.generation)
    }

    /// Re-reads the sources now (after a 401 with `generation`). `Ok(true)` when the
    /// value changed (or was already replaced), `Ok(false)` when it is the same.
    pub fn reload(
        &self,
        generation: u64,
        same: impl Fn(&T, &T) -> bool,
    ) -> Result<bool, ConfigError> {
        let mut s = lock(&self.state);
        if s.generation != generation {
            return Ok(true);
        }
        let fresh = (self.load)()?;
        s.stamps = stamps(&self.files);
        if same(&fresh, &s.value) {
            return Ok(false);
        }
        s.value = Arc::new(fresh);
        s.generation += 1;
        Ok(true)
    }

    fn take_change(&self, s: &mut State<T>) {
        let now_stamps = stamps(&self.files);
        if now_stamps == s.stamps {
            return;
        }
        // Quiet: no file of the set was written within the last second.
        let newest = now_stamps
            .iter()
            .flatten()
            .map(|st| st.mtime_ns.max(st.ctime_ns))
            .max()
            .unwrap_or(0);
        let now_ns = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        if now_ns - newest < QUIET.as_nanos() as i128 {
            return;
        }
        match (self.load)() {
            Ok(v) => {
                s.value = Arc::new(v);
                s.generation += 1;
                s.stamps = now_stamps;
                s.failed = None;
                tracing::info!(
                    files = ?self.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                    "credential files changed; using what they hold now"
                );
            }
            Err(e) => {
                if s.failed.as_ref() != Some(&now_stamps) {
                    tracing::warn!(
                        error = %e,
                        "credential files changed but cannot be read; keeping the credentials read before"
                    );
                    s.failed = Some(now_stamps);
                }
            }
        }
    }
}

fn stamps(files: &[PathBuf]) -> Vec<Option<Stamp>> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|p| {
            std::fs::metadata(p).ok().map(|m| Stamp {
                dev: m.dev(),
                ino: m.ino(),
                len: m.len(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::{ExposeSecret, SecretString};

    fn source(dir: &std::path::Path, name: &str) -> SecretSource {
        SecretSource::File {
            template: name.into(),
            base: dir.into(),
        }
    }

    fn pair(dir: &std::path::Path) -> Reloading<(SecretString, SecretString)> {
        let (a, b) = (source(dir, "a"), source(dir, "b"));
        let (a2, b2) = (a.clone(), b.clone());
        Reloading::new(&[&a, &b], move || Ok((a2.load()?, b2.load()?))).expect("loads")
    }

    /// `a` holding A1 and `b` holding B1 in a new directory, and the pair read from them.
    fn two_files() -> (tempfile::TempDir, Reloading<(SecretString, SecretString)>) {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a", "A1");
        write(dir.path(), "b", "B1");
        let r = pair(dir.path());
        (dir, r)
    }

    fn write(dir: &std::path::Path, name: &str, value: &str) {
        std::fs::write(dir.join(name), value).expect("write");
    }

    /// Lets a change go quiet (in real time: quiet is judged by the files' change times),
    /// then lets the reloader look.
    async fn quiet_then_check() {
        std::thread::sleep(QUIET + Duration::from_millis(50));
        tokio::time::advance(CHECK_EVERY).await;
    }

    fn values(r: &Reloading<(SecretString, SecretString)>) -> (String, String, u64) {
        let (v, g) = r.current();
        (
            v.0.expose_secret().to_owned(),
            v.1.expose_secret().to_owned(),
            g,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_is_taken_once_quiet_and_all_files_together() {
        let (dir, r) = two_files();
        assert_eq!(values(&r), ("A1".into(), "B1".into(), 0));
        write(dir.path(), "a", "A2");
        tokio::time::advance(CHECK_EVERY).await;
        // Written just now: not quiet yet, the old pair stays (never A2 with B1 by
        // design of the rotation below).
        assert_eq!(values(&r).2, 0);
        write(dir.path(), "b", "B2");
        quiet_then_check().await;
        assert_eq!(values(&r), ("A2".into(), "B2".into(), 1));
        // Unchanged: the same generation.
        tokio::time::advance(CHECK_EVERY).await;
        assert_eq!(values(&r).2, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_change_keeps_the_old_value() {
        let (dir, r) = two_files();
        std::fs::remove_file(dir.path().join("b")).expect("rm");
        quiet_then_check().await;
        assert_eq!(values(&r), ("A1".into(), "B1".into(), 0));
        write(dir.path(), "b", "B3");
        quiet_then_check().await;
        assert_eq!(values(&r), ("A1".into(), "B3".into(), 1));
    }

    #[test]
    fn reload_after_a_401_says_whether_anything_changed() {
        let (dir, r) = two_files();
        let same = |x: &(SecretString, SecretString), y: &(SecretString, SecretString)| {
            x.0.expose_secret() == y.0.expose_secret() && x.1.expose_secret() == y.1.expose_secret()
        };
        assert!(!r.reload(0, same).expect("reads"));
        write(dir.path(), "a", "A9");
        assert!(r.reload(0, same).expect("reads"));
        assert!(
            r.reload(0, same).expect("already replaced"),
            "an old generation"
        );
        std::fs::remove_file(dir.path().join("a")).expect("rm");
        let e = r.reload(1, same).expect_err("missing").to_string();
        assert!(e.contains("a"), "{e}");
    }
}
