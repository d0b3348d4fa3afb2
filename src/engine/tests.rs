//! Batches and freshness under paused time, over the in-memory cloud: every action goes
//! out within `max_decision_age` of the listing that decided it, a long backlog is worked
//! in rounds, and a connection someone else decided is not acted on after that window.

use super::*;
use crate::cloud::fake::{FakeCloud, FakeTarget, connection};

fn engine(opts: EngineOptions) -> (Engine, tempfile::TempDir) {
    let policies = Policies::embedded_examples().expect("policies");
    crate::test_support::engine(policies, opts)
}

/// Connections of accounts nobody lists, older ones first: no policy matches, and
/// `on_no_match = "reject"` rejects them (the shipped quotas do not apply: one each).
fn backlog(n: usize) -> Vec<WireConnection> {
    (0..n)
        .map(|i| {
            let mut c = connection(&format!("e{i:03}"), i as i64);
            c.domain_id = Some(format!("{i:032x}"));
            c
        })
        .collect()
}

/// The in-memory cloud with one target: `backlog(pending)`, each action taking
/// `act_ms` milliseconds.
fn one_target(pending: usize, act_ms: u64) -> FakeCloud {
    FakeCloud(vec![FakeTarget::new(
        backlog(pending),
        Duration::from_millis(act_ms),
    )])
}

fn opts(max_in_flight: usize, age_ms: u64) -> EngineOptions {
    EngineOptions {
        max_in_flight,
        max_decision_age: Duration::from_millis(age_ms),
        max_requests_per_second: 0,
        on_no_match: OnNoMatch::Reject,
        ..EngineOptions::default()
    }
}

#[tokio::test(start_paused = true)]
async fn paused_time_every_action_goes_out_within_max_decision_age_of_its_listing() {
    let (e, _dir) = engine(opts(2, 1000));
    let cloud = one_target(20, 700);
    let report = e.run_cycle(&cloud, &Stop::new()).await;
    let t = &cloud.0[0];
    assert_eq!(report.targets[0].applied, 20, "{report:?}");
    let listings = t.listings();
    for (at, id) in t.acts() {
        let listed = listings
            .iter()
            .rev()
            .find(|l| **l <= at)
            .expect("a listing before every action");
        assert!(
            at - *listed <= Duration::from_millis(1000),
            "{id} sent {:?} after its listing",
            at - *listed
        );
    }
    assert!(
        listings.len() >= 2,
        "the backlog was worked in rounds: {listings:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn paused_time_a_connection_decided_elsewhere_is_not_acted_on_after_the_window() {
    let (e, _dir) = engine(opts(1, 1000));
    let cloud = one_target(3, 600);
    let t = &cloud.0[0];
    let someone = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        t.set_status("e002", "rejected");
        Instant::now()
    };
    let stop = Stop::new();
    let (_, decided_at) = tokio::join!(e.run_cycle(&cloud, &stop), someone);
    for (at, id) in t.acts() {
        if id == "e002" {
            assert!(
                at <= decided_at + Duration::from_millis(1000),
                "acted on e002 {:?} after someone else decided it",
                at - decided_at
            );
        }
    }
    assert_eq!(t.status("e002").as_deref(), Some("rejected"));
}

#[tokio::test(start_paused = true)]
async fn paused_time_a_reload_supersedes_decisions_not_yet_sent() {
    let (e, _dir) = engine(opts(1, 60_000));
    let cloud = one_target(3, 1000);
    let swap = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Same files, new set: the version is the same, the generation is not.
        e.set_policies(Arc::new(Policies::embedded_examples().expect("policies")));
    };
    let stop = Stop::new();
    let (report, ()) = tokio::join!(e.run_cycle(&cloud, &stop), swap);
    let r = &report.targets[0];
    assert_eq!(r.applied, 3, "all decided again and sent: {report:?}");
    assert_eq!(
        r.skipped, 2,
        "the two not yet sent were superseded: {report:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn paused_time_a_reload_during_the_listing_has_the_round_decided_again_under_the_new_set() {
    // Nothing matches the examples with on_no_match = "leave-pending": the round decides
    // to leave all three pending. A set that forbids everything arrives while the pending
    // listing is on its way; the round was decided under the set it listed with, so the
    // service is listed again and the new set rejects them in the same cycle.
    let (e, _dir) = engine(EngineOptions {
        on_no_match: OnNoMatch::LeavePending,
        ..opts(2, 10_000)
    });
    let old = e.policies().version().to_owned();
    let cloud = FakeCloud(vec![
        FakeTarget::new(backlog(3), Duration::from_millis(10))
            .with_list_delay(Duration::from_secs(1)),
    ]);
    let forbid = Policies::from_files(vec![(
        "forbid.cedar".to_owned(),
        b"forbid (principal, action, resource);".to_vec(),
    )])
    .expect("policies");
    let reload = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        e.set_policies(Arc::new(forbid));
    };
    let stop = Stop::new();
    let (report, ()) = tokio::join!(e.run_cycle(&cloud, &stop), reload);
    assert_eq!(report.targets[0].applied, 3, "{report:?}");
    assert_eq!(cloud.0[0].acts().len(), 3, "rejected under the new set");
    assert_ne!(e.policies().version(), old);
}
