//! An in-memory cloud behind the same traits as the real client, for tests under paused
//! time (tokio's clock can jump when no sockets are involved). One target, one service;
//! it logs when each listing and each action happened.

use super::error::{ApiError, ApiErrorKind};
use super::types::{EndpointService, WireConnection, status};
use super::{ActResponse, Cloud, Guard, TargetApi};
use crate::config::Target;
use crate::decision::Action;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The service the fake serves.
pub const SVC: &str = "4189d3c2-8882-4871-a3c2-d380272eed88";
/// A partner account of the shipped example entities.
pub const PARTNER: &str = "6e9dfd51d1124e8d8498dce894923a0d";

/// A pending connection of [`PARTNER`], created `age_rank` seconds after an hour ago.
pub fn connection(id: &str, age_rank: i64) -> WireConnection {
    WireConnection {
        id: Some(id.into()),
        domain_id: Some(PARTNER.into()),
        description: Some("CHG-1234 payments link".into()),
        status: Some(status::PENDING.into()),
        created_at: Some(crate::clock::format_secs(
            chrono::Utc::now() - chrono::Duration::hours(1) + chrono::Duration::seconds(age_rank),
        )),
        ..WireConnection::default()
    }
}

/// One target with one service; every action takes `act_delay` and accepts or rejects.
pub struct FakeTarget {
    target: Target,
    conns: Mutex<Vec<WireConnection>>,
    act_delay: Duration,
    /// How long a pending listing takes.
    list_delay: Duration,
    listings: Mutex<Vec<Instant>>,
    acts: Mutex<Vec<(Instant, String)>>,
    /// Beaten on every answer, as the real transport does.
    progress: Option<crate::progress::Progress>,
}

impl FakeTarget {
    /// A target serving `conns`.
    pub fn new(conns: Vec<WireConnection>, act_delay: Duration) -> FakeTarget {
        FakeTarget {
            target: Target::new("fake", "cn-north-4", "0605767a3300d5762fb7c0186d8bfc2b"),
            conns: Mutex::new(conns),
            act_delay,
            list_delay: Duration::ZERO,
            listings: Mutex::new(Vec::new()),
            acts: Mutex::new(Vec::new()),
            progress: None,
        }
    }

    /// Beats `p` on every answer, as the real transport beats the daemon's progress.
    pub fn with_progress(mut self, p: crate::progress::Progress) -> FakeTarget {
        self.progress = Some(p);
        self
    }

    /// Every pending listing takes `d`.
    pub fn with_list_delay(mut self, d: Duration) -> FakeTarget {
        self.list_delay = d;
        self
    }

    /// More connections arrive.
    pub fn add(&self, conns: Vec<WireConnection>) {
        self.conns.lock().expect("lock").extend(conns);
    }

    fn answered(&self) {
        if let Some(p) = &self.progress {
            p.beat();
        }
    }

    /// When each pending listing started.
    pub fn listings(&self) -> Vec<Instant> {
        self.listings.lock().expect("lock").clone()
    }

    /// When each action was sent, and to which endpoint.
    pub fn acts(&self) -> Vec<(Instant, String)> {
        self.acts.lock().expect("lock").clone()
    }

    /// Sets a connection's status, as someone else deciding.
    pub fn set_status(&self, id: &str, st: &str) {
        for c in self.conns.lock().expect("lock").iter_mut() {
            if c.id.as_deref() == Some(id) {
                c.status = Some(st.to_owned());
            }
        }
    }

    /// A connection's status.
    pub fn status(&self, id: &str) -> Option<String> {
        self.conns
            .lock()
            .expect("lock")
            .iter()
            .find(|c| c.id.as_deref() == Some(id))
            .and_then(|c| c.status.clone())
    }
}

impl TargetApi for FakeTarget {
    fn target(&self) -> &Target {
        &self.target
    }

    async fn list_services(&self) -> Result<Vec<EndpointService>, ApiError> {
        Ok(vec![EndpointService {
            id: Some(SVC.into()),
            service_name: Some("payments".into()),
            approval_enabled: Some(true),
            status: Some(status::AVAILABLE.into()),
            ..EndpointService::default()
        }])
    }

    async fn list_connections(
        &self,
        _service_id: &str,
        st: &str,
    ) -> Result<Vec<WireConnection>, ApiError> {
        if st == status::PENDING {
            self.listings.lock().expect("lock").push(Instant::now());
            tokio::time::sleep(self.list_delay).await;
        }
        self.answered();
        Ok(self
            .conns
            .lock()
            .expect("lock")
            .iter()
            .filter(|c| c.status.as_deref() == Some(st))
            .cloned()
            .collect())
    }

    async fn get_connection(
        &self,
        _service_id: &str,
        endpoint_id: &str,
    ) -> Result<Option<WireConnection>, ApiError> {
        Ok(self
            .conns
            .lock()
            .expect("lock")
            .iter()
            .find(|c| c.id.as_deref() == Some(endpoint_id))
            .cloned())
    }

    async fn act(
        &self,
        _service_id: &str,
        endpoint_id: &str,
        action: Action,
        guard: Guard<'_>,
    ) -> Result<ActResponse, ApiError> {
        if let Some(why) = guard() {
            return Err(ApiError::new("action", "fake", ApiErrorKind::NotSent).with_message(why));
        }
        self.acts
            .lock()
            .expect("lock")
            .push((Instant::now(), endpoint_id.to_owned()));
        tokio::time::sleep(self.act_delay).await;
        self.answered();
        let after = action.resulting_status().map(str::to_owned);
        self.set_status(endpoint_id, after.as_deref().unwrap_or_default());
        Ok(ActResponse {
            http_status: 200,
            connection: Some(WireConnection {
                id: Some(endpoint_id.into()),
                status: after,
                ..WireConnection::default()
            }),
            attempts: 1,
        })
    }

    fn unready_reason(&self) -> Option<String> {
        None
    }
}

/// Every target of the fake.
pub struct FakeCloud(pub Vec<FakeTarget>);

impl Cloud for FakeCloud {
    type Target = FakeTarget;
    fn targets(&self) -> &[FakeTarget] {
        &self.0
    }
}
