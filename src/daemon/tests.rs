//! The poll loop under paused time: reload, the shutdown grace and its second signal,
//! heartbeats and the watchdog while a long cycle runs. The cloud is an in-memory fake
//! behind the same trait the real client implements, so tokio's clock can jump without
//! sockets.

use super::*;
use crate::cloud::fake::{FakeCloud, FakeTarget, connection};
use crate::engine::EngineOptions;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

struct Rig {
    daemon: Arc<Daemon<FakeCloud>>,
    states: Arc<Mutex<Vec<State>>>,
    policies: tempfile::TempDir,
    _audit: tempfile::TempDir,
}

impl Rig {
    fn new(pending: usize, act_delay: Duration, watchdog: Option<Duration>, answers: bool) -> Rig {
        let policies = tempfile::tempdir().expect("tempdir");
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        for e in std::fs::read_dir(&repo).expect("policies") {
            let e = e.expect("entry");
            if e.file_type().expect("type").is_file() {
                std::fs::copy(e.path(), policies.path().join(e.file_name())).expect("copy");
            }
        }
        let (engine, audit) = crate::test_support::engine(
            Policies::load(policies.path()).expect("policies"),
            EngineOptions {
                max_in_flight: if answers { 1 } else { 4 },
                ..EngineOptions::default()
            },
        );
        let engine = Arc::new(engine);
        let mut target = FakeTarget::new(
            (0..pending)
                .map(|i| connection(&format!("e{i}"), i as i64))
                .collect(),
            act_delay,
        );
        if answers {
            target = target.with_progress(engine.metrics().progress().clone());
        }
        // A second target with nothing pending: its cycles are short, but it waits for
        // the first one's, as every target waits for the whole cycle.
        let idle = FakeTarget::new(Vec::new(), Duration::ZERO);
        let cloud = Arc::new(FakeCloud(vec![target, idle]));
        let interval = Duration::from_secs(30);
        let health = Arc::new(Health::new(engine.clone(), cloud.clone(), interval));
        let states = Arc::new(Mutex::new(Vec::new()));
        let daemon = Arc::new(Daemon {
            engine,
            cloud,
            health,
            policy_dir: policies.path().to_owned(),
            interval,
            jitter: Duration::ZERO,
            notifier: Notifier::Record(states.clone(), watchdog),
            stopping_sent: Default::default(),
            checkpoints: None,
            warned_long_cycle: Default::default(),
            rate: 0,
        });
        Rig {
            daemon,
            states,
            policies,
            _audit: audit,
        }
    }

    /// Runs the loop beside `steps` (a test's script, given the rig, the shutdown token
    /// and the control sender) until both end; returns when the loop ended, measured from the
    /// start. Joined rather than spawned: the loop's future need not be `Send`.
    async fn drive<'a, F: std::future::Future<Output = ()> + 'a>(
        &'a self,
        steps: impl FnOnce(&'a Rig, CancellationToken, UnboundedSender<Control>, Arc<AtomicBool>) -> F,
    ) -> Duration {
        let (tx, rx) = unbounded_channel();
        let stop = CancellationToken::new();
        let ended = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let run = async {
            let stopping = Stop::on(stop.clone());
            self.daemon
                .poll_loop(&stopping, &mut Controls::new(rx))
                .await;
            ended.store(true, Ordering::SeqCst);
            start.elapsed()
        };
        let (took, ()) = tokio::join!(run, steps(self, stop.clone(), tx, ended.clone()));
        took
    }

    fn states(&self) -> Vec<State> {
        self.states.lock().expect("lock").clone()
    }

    fn pings(&self) -> usize {
        self.states()
            .iter()
            .filter(|s| **s == State::Watchdog)
            .count()
    }

    fn acts(&self) -> usize {
        self.daemon.cloud.0[0].acts().len()
    }

    /// Signs a checkpoint every `every` with a fresh Ed25519 key.
    fn signing(mut self, every: Duration) -> Rig {
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .expect("key")
            .serialize_pem();
        let key = crate::audit::SigningKey::from_pem(pem.as_bytes(), std::path::Path::new("k.pem"))
            .expect("an Ed25519 key");
        Arc::get_mut(&mut self.daemon)
            .expect("not shared yet")
            .checkpoints = Some((key, every));
        self
    }

    /// The checkpoint records in the audit log so far.
    fn checkpoints(&self) -> usize {
        let text =
            std::fs::read_to_string(self._audit.path().join("audit.jsonl")).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("\"kind\":\"checkpoint\""))
            .count()
    }
}

#[tokio::test(start_paused = true)]
async fn paused_time_reload_takes_effect_between_cycles_and_is_announced() {
    let rig = Rig::new(0, Duration::ZERO, None, false);
    rig.drive(|r, stop, tx, _| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(r.states(), [State::Ready]);
        let before = r.daemon.engine.policies().version().to_owned();
        std::fs::write(
            r.policies.path().join("zz-new.cedar"),
            "@id(\"zz-new\")\nforbid (principal, action, resource) when { context.description == \"x\" };\n",
        )
        .expect("write");
        tx.send(Control::Reload).expect("send");
        // Mid-wait (the interval is 30 s): the reload happens at once, not at the next
        // cycle.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_ne!(r.daemon.engine.policies().version(), before);
        assert_eq!(r.states(), [State::Ready, State::Reloading, State::Ready]);
        // A broken directory keeps the new set.
        let kept = r.daemon.engine.policies().version().to_owned();
        std::fs::write(r.policies.path().join("zz-broken.cedar"), "forbid (").expect("write");
        tx.send(Control::Reload).expect("send");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(r.daemon.engine.policies().version(), kept);
        // So does a half-deployed one: a forbid whose link points nowhere.
        std::fs::remove_file(r.policies.path().join("zz-broken.cedar")).expect("rm");
        std::fs::remove_file(r.policies.path().join("forbid.cedar")).expect("rm");
        std::os::unix::fs::symlink(
            r.policies.path().join("..gone/forbid.cedar"),
            r.policies.path().join("forbid.cedar"),
        )
        .expect("link");
        tx.send(Control::Reload).expect("send");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(r.daemon.engine.policies().version(), kept);
        let m = r.daemon.engine.metrics().encode();
        assert!(
            m.contains("vpcep_approver_policy_reloads_total{result=\"failure\"} 2"),
            "{m}"
        );
        stop.cancel();
    })
    .await;
    assert_eq!(rig.states().last(), Some(&State::Stopping));
}

#[tokio::test(start_paused = true)]
async fn paused_time_a_long_cycle_gets_its_interval_checkpoints() {
    // One action hangs for an hour, so the first cycle lasts until the stop; checkpoints
    // every 30 s are written while it runs (at 30, 60 and 90 s), not only between cycles.
    let rig = Rig::new(1, Duration::from_secs(3600), None, false).signing(Duration::from_secs(30));
    rig.drive(|r, stop, _tx, _| async move {
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(r.acts(), 1, "the cycle is still on its action");
        assert_eq!(r.checkpoints(), 3, "one per 30 s during the cycle");
        stop.cancel();
    })
    .await;
    assert_eq!(rig.checkpoints(), 3, "none while stopping");
}

#[tokio::test(start_paused = true)]
async fn paused_time_shutdown_waits_the_grace_for_in_flight_actions_and_no_longer() {
    // Every action hangs for an hour; the loop gives them exactly the grace period.
    let rig = Rig::new(3, Duration::from_secs(3600), None, false);
    let took = rig
        .drive(|r, stop, _tx, _| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(r.acts(), 3, "all three actions are on the wire");
            stop.cancel();
        })
        .await;
    assert_eq!(took, Duration::from_secs(1) + SHUTDOWN_GRACE);
    assert_eq!(rig.states(), [State::Ready, State::Stopping]);
}

#[tokio::test(start_paused = true)]
async fn paused_time_a_second_stop_signal_ends_the_wait_at_once() {
    let rig = Rig::new(2, Duration::from_secs(3600), None, false);
    let took = rig
        .drive(|_, _stop, tx, ended| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send(Control::Shutdown).expect("send");
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert!(
                !ended.load(Ordering::SeqCst),
                "the first signal waits for in-flight actions"
            );
            tx.send(Control::Shutdown).expect("send");
        })
        .await;
    assert_eq!(took, Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn paused_time_a_hung_request_is_no_progress_and_stops_the_watchdog() {
    // One action hangs for ten minutes: nothing answers, no cycle ends, nothing is
    // written. The loop still goes round, but /healthz fails after 2 × 30 s + 60 s and
    // the watchdog is no longer fed, so systemd restarts the daemon.
    let rig = Rig::new(
        1,
        Duration::from_secs(600),
        Some(Duration::from_secs(15)),
        false,
    );
    rig.drive(|r, stop, _tx, _| async move {
        tokio::time::sleep(Duration::from_secs(110)).await;
        r.daemon.health.alive().expect("alive within the limit");
        let fed = r.pings();
        assert!(
            fed >= 2,
            "the watchdog was fed while within the limit: {fed}"
        );
        tokio::time::sleep(Duration::from_secs(20)).await;
        let e = r.daemon.health.alive().expect_err("no progress for 130 s");
        assert!(e.contains("no progress"), "{e}");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            r.pings() <= fed + 1,
            "the watchdog is not fed without progress: {} then {}",
            fed,
            r.pings()
        );
        stop.cancel();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn paused_time_a_long_cycle_that_advances_keeps_health_and_readiness() {
    // 30 actions of 20 s each, one at a time: a ten-minute cycle that answers every 20 s.
    let rig = Rig::new(
        30,
        Duration::from_secs(20),
        Some(Duration::from_secs(15)),
        true,
    );
    rig.drive(|r, stop, _tx, _| async move {
        tokio::time::sleep(Duration::from_secs(300)).await;
        r.daemon.health.alive().expect("answers keep it alive");
        let e = r
            .daemon
            .health
            .ready()
            .expect_err("the first cycle has not ended");
        assert!(e.contains("no successful cycle yet"), "{e}");
        wait_until(|| r.daemon.cloud.0[0].status("e29").as_deref() != Some("pendingAcceptance"))
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        r.daemon.health.ready().expect("ready after the long cycle");
        // A second long cycle: ready all along, since the last one took ten minutes.
        r.daemon.cloud.0[0].add(
            (100..130)
                .map(|i| connection(&format!("e{i}"), i))
                .collect(),
        );
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(50)).await;
            r.daemon
                .health
                .ready()
                .expect("a long cycle that advances keeps readiness");
        }
        stop.cancel();
    })
    .await;
}

/// Steps paused time until `f` holds (an hour at most).
async fn wait_until(f: impl Fn() -> bool) {
    for _ in 0..3600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("never happened");
}
