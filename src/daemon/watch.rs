//! `[policy] watch` (README "Policies"): the policy directory is watched, and a change — a
//! file written, renamed or removed, a Kubernetes ConfigMap's atomic `..data` symlink
//! swap — asks for a reload once the directory has been quiet for a moment, so a volume
//! update that touches several entries is one reload.
//!
//! The watch is inotify through the `notify` crate; where that cannot be set up (no
//! inotify, its limits reached) the directory is polled every second instead.

use notify::{PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tracing::{info, warn};

/// How long the directory must be quiet before the reload.
pub const QUIET: Duration = Duration::from_secs(1);
/// How often the fallback looks at the directory.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Whether an event can change what the directory loads as. Opening, reading and
/// closing a file do not: otherwise every other reader of the directory (a second daemon,
/// `check`, a backup) would cause a reload here, and two daemons on one directory would
/// reload each other every quiet period, each reload a cycle.
fn changes(kind: &notify::EventKind) -> bool {
    use notify::EventKind as K;
    use notify::event::{MetadataKind, ModifyKind};
    !matches!(
        kind,
        K::Access(_) | K::Modify(ModifyKind::Metadata(MetadataKind::AccessTime))
    )
}

/// A watched policy directory.
pub struct PolicyWatch {
    // Kept alive: dropping the watcher ends the watch.
    _watcher: Box<dyn Watcher + Send>,
    events: UnboundedReceiver<()>,
    quiet: Duration,
    /// When the latest change not yet reported was seen (kept across cancellations of
    /// [`PolicyWatch::changed`], which runs in `select!` loops).
    last: Option<tokio::time::Instant>,
}

impl std::fmt::Debug for PolicyWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyWatch")
            .field("quiet", &self.quiet)
            .finish_non_exhaustive()
    }
}

impl PolicyWatch {
    /// Watches `dir` (its entries, not subdirectories: a ConfigMap's swap renames
    /// `..data` in `dir` itself). The error names the directory.
    pub fn new(dir: &Path, quiet: Duration) -> Result<PolicyWatch, String> {
        let (tx, events) = unbounded_channel();
        let handler = move |res: notify::Result<notify::Event>| {
            // Which entry changed does not matter: the whole directory is reloaded.
            if res.is_ok_and(|e| changes(&e.kind)) {
                let _ = tx.send(());
            }
        };
        let inotify = RecommendedWatcher::new(handler.clone(), notify::Config::default()).and_then(
            |mut w| {
                w.watch(dir, RecursiveMode::NonRecursive)?;
                Ok(w)
            },
        );
        let watcher: Box<dyn Watcher + Send> = match inotify {
            Ok(w) => {
                info!(dir = %dir.display(), "watching the policy directory");
                Box::new(w)
            }
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot watch the policy directory with inotify; polling it every second");
                let mut w = PollWatcher::new(
                    handler,
                    notify::Config::default()
                        .with_poll_interval(POLL_EVERY)
                        .with_compare_contents(true),
                )
                .map_err(|e| format!("cannot watch policy directory {}: {e}", dir.display()))?;
                w.watch(dir, RecursiveMode::Recursive)
                    .map_err(|e| format!("cannot watch policy directory {}: {e}", dir.display()))?;
                Box::new(w)
            }
        };
        Ok(PolicyWatch {
            _watcher: watcher,
            events,
            quiet,
            last: None,
        })
    }

    /// Resolves once something changed and the directory has been quiet for the quiet
    /// period since; never when the watch has ended. Cancel-safe: a change seen before
    /// the future was dropped is reported by the next call.
    pub async fn changed(&mut self) {
        loop {
            match self.last {
                None => match self.events.recv().await {
                    Some(()) => self.last = Some(tokio::time::Instant::now()),
                    None => return std::future::pending().await,
                },
                Some(last) => {
                    tokio::select! {
                        ev = self.events.recv() => match ev {
                            Some(()) => self.last = Some(tokio::time::Instant::now()),
                            None => {
                                self.last = None;
                                return;
                            }
                        },
                        () = tokio::time::sleep_until(last + self.quiet) => {
                            self.last = None;
                            return;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One version of a ConfigMap as the kubelet writes it: the directory `name` in `d`
    /// holding `a.cedar` with `policy`.
    fn configmap_version(d: &Path, name: &str, policy: &str) -> std::path::PathBuf {
        let version = d.join(name);
        std::fs::create_dir(&version).expect("mkdir");
        std::fs::write(version.join("a.cedar"), policy).expect("write");
        version
    }

    #[tokio::test]
    async fn a_configmap_swap_is_one_change_after_the_quiet_period() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        configmap_version(
            d,
            "..2026_11_27_12_00_00.1",
            "permit (principal, action, resource);",
        );
        std::os::unix::fs::symlink("..2026_11_27_12_00_00.1", d.join("..data")).expect("link");
        std::os::unix::fs::symlink("..data/a.cedar", d.join("a.cedar")).expect("link");
        let mut w = PolicyWatch::new(d, Duration::from_millis(300)).expect("watch");
        // The kubelet's update: a new directory, a new link, renamed over `..data`.
        let second = configmap_version(
            d,
            "..2026_11_27_12_05_00.2",
            "forbid (principal, action, resource);",
        );
        std::os::unix::fs::symlink("..2026_11_27_12_05_00.2", d.join("..data_tmp")).expect("link");
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).expect("swap");
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("the swap is seen");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "waited for quiet"
        );
        // A call dropped in the middle of the quiet period loses nothing.
        std::fs::write(
            second.join("b.cedar"),
            "permit (principal, action, resource);",
        )
        .expect("write");
        std::os::unix::fs::symlink("..data/b.cedar", d.join("b.cedar")).expect("link");
        let _ = tokio::time::timeout(Duration::from_millis(100), w.changed()).await;
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("still reported");
        // Nothing more happened: no further change.
        assert!(
            tokio::time::timeout(Duration::from_millis(600), w.changed())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn reading_the_files_is_not_a_change() {
        // Another process that loads the same directory (a second daemon, `check`, a
        // backup) opens and reads every file: that must not reload this one, or two
        // daemons on one directory reload each other forever.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.cedar");
        std::fs::write(&file, "permit (principal, action, resource);").expect("write");
        let mut w = PolicyWatch::new(dir.path(), Duration::from_millis(100)).expect("watch");
        for _ in 0..3 {
            let _ = std::fs::read_to_string(&file).expect("read");
            let _ = std::fs::read_dir(dir.path()).expect("list").count();
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(600), w.changed())
                .await
                .is_err(),
            "a read was taken for a change"
        );
        // A write still is one.
        std::fs::write(&file, "forbid (principal, action, resource);").expect("write");
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("the write is seen");
    }
}
