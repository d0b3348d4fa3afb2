//! The small HTTP surface (README "Health, metrics and alerts"): `/healthz`, `/readyz` and
//! `/metrics`, served by a listener that stays bounded whatever its clients do.
//!
//! [`serve`] holds at most `max_connections` connections. When one more arrives, the
//! oldest connection that is not being answered (one that has not sent a whole request
//! yet, or a kept-alive one between requests) is closed to make room, so a flood of idle
//! or half-sent connections cannot keep a probe out; only when every connection is being
//! answered is the new one closed at once. Either way the closed connection is counted in
//! `vpcep_approver_http_connections_refused_total`. A request's headers must arrive within
//! [`Limits::header_timeout`] of the connection, or of the first byte of the next request
//! on a kept-alive connection; a kept-alive connection closes after [`Limits::idle_timeout`]
//! between requests, and so does one whose client stops reading its answer. Idle, the
//! listener holds no timer: it costs nothing until a client connects.

use crate::health::Health;
use crate::metrics::Metrics;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::body::{Frame, Incoming, SizeHint};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The router over the daemon's health state.
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn healthz(State(h): State<Arc<Health>>) -> Response {
    match h.alive() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn readyz(State(h): State<Arc<Health>>) -> Response {
    match h.ready() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn metrics(State(h): State<Arc<Health>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics().encode(),
    )
        .into_response()
}

/// The bounds of the listener (README "Health, metrics and alerts").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once (`[http] max_connections`).
    pub max_connections: usize,
    /// Time from the connection, or from the first byte of a later request on it, to the
    /// end of the request's headers.
    pub header_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request, and the longest an
    /// answer may take to be written.
    pub idle_timeout: Duration,
}

impl Limits {
    /// Request headers must arrive within 5 s.
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
    /// Idle keep-alive connections close after 60 s.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

    /// The daemon's limits with `max_connections` (at least 1).
    pub fn new(max_connections: usize) -> Limits {
        Limits {
            max_connections: max_connections.max(1),
            header_timeout: Self::HEADER_TIMEOUT,
            idle_timeout: Self::IDLE_TIMEOUT,
        }
    }
}

/// How long connections may take to finish after the shutdown token fires.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// The read buffer of a connection may grow to this (hyper's least): our requests are
/// a line and a few headers, and 64 connections then hold at most 1 MiB.
const MAX_BUF: usize = 8 * 1024;
/// Pause after an accept error that is not about one connection (e.g. `EMFILE`), so a
/// listener that stays readable does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning per this about refused connections or accept errors.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Serves `router` on `listener` within `limits` until `shutdown` fires: then it stops
/// accepting, lets open connections finish their answer (at most a second) and returns.
/// Connections closed because of the limit are counted in `metrics`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let registry = Arc::new(Registry::default());
    let mut tasks = JoinSet::new();
    let mut refused = Throttled::default();
    let mut accept_errors = Throttled::default();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shutdown.cancelled() => break,
        };
        // Finished connections are gone already (their socket closed when their task
        // ended); this only frees the set's bookkeeping.
        while tasks.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if per_connection(&e) => continue,
            Err(e) => {
                if let Some(n) = accept_errors.tick() {
                    warn!(error = %e, errors = n, "accepting an http connection failed");
                }
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let now = Instant::now();
        // Every refusal is counted; the warning comes at most once a minute.
        let mut count_refused = |what: &str| {
            metrics.http_connection_refused();
            if let Some(n) = refused.tick() {
                warn!(
                    max_connections = limits.max_connections,
                    refused = n,
                    "http connection limit reached: {what}"
                );
            }
        };
        let (slot, state) = match registry.admit(now, limits.max_connections) {
            Admitted::Free(slot, state) => (slot, state),
            Admitted::Evicted(slot, state) => {
                count_refused("closing the oldest connections that are not being answered");
                (slot, state)
            }
            Admitted::Refused => {
                drop(stream);
                count_refused("every connection is being answered, closing new ones");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let _slot = slot;
            connection(stream, state, router, limits, shutdown).await;
        });
        // Let an evicted connection's task close its socket before the next accept.
        tokio::task::yield_now().await;
    }
    drop(listener);
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        debug!(
            open = tasks.len(),
            "closing http connections still open at shutdown"
        );
    }
    info!("http listener stopped");
}

/// Accept errors that concern only the connection being accepted.
fn per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Counts events and says when to log them: the first, then at most once per
/// [`WARN_EVERY`], with the count since the last log.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    count: u64,
}

impl Throttled {
    fn tick(&mut self) -> Option<u64> {
        self.count += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

/// Serves one connection until it ends, breaks a limit, is evicted or shutdown finishes.
async fn connection<I>(
    io: I,
    state: Arc<ConnState>,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(Watched::new(io, state.clone(), limits));
    let service = Service {
        inner: hyper_util::service::TowerToHyperService::new(router),
        state: state.clone(),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(MAX_BUF)
        // The header and idle limits are [`Watched`]'s: hyper's own header timer would
        // also run between requests and close every kept-alive connection after 5 s.
        .header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(error = %e, "http connection ended");
                }
                break;
            }
            () = state.evict.cancelled() => break,
            () = shutdown.cancelled(), if !stopping => {
                // Finish the answer being written, then close.
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for, or reading, a request's headers (since the connection, or since the
    /// first byte of this request).
    Head,
    /// A request is being answered (since its headers were read).
    Busy,
    /// Kept alive between requests (since the last answer was handed to the socket).
    Idle,
}

#[derive(Debug)]
struct PhaseState {
    phase: Phase,
    since: Instant,
    /// Requests seen; an answer's end counts only for the latest.
    requests: u64,
    /// When bytes were first read while busy: the start of a pipelined request.
    read_while_busy: Option<Instant>,
}

/// What the listener, the socket wrapper and the service share about one connection.
#[derive(Debug)]
struct ConnState {
    phase: Mutex<PhaseState>,
    /// Fired to close the connection for a newcomer.
    evict: CancellationToken,
}

impl ConnState {
    fn new(now: Instant) -> ConnState {
        ConnState {
            phase: Mutex::new(PhaseState {
                phase: Phase::Head,
                since: now,
                requests: 0,
                read_while_busy: None,
            }),
            evict: CancellationToken::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PhaseState> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes arrived: between requests they start the next one.
    fn on_read(&self, now: Instant) {
        let mut s = self.lock();
        match s.phase {
            Phase::Idle => {
                s.phase = Phase::Head;
                s.since = now;
            }
            Phase::Busy => {
                s.read_while_busy.get_or_insert(now);
            }
            Phase::Head => {}
        }
    }

    /// A request's headers were read; returns its number.
    fn on_request(&self, now: Instant) -> u64 {
        let mut s = self.lock();
        s.phase = Phase::Busy;
        s.since = now;
        s.read_while_busy = None;
        s.requests += 1;
        s.requests
    }

    /// The answer to request `n` was handed over whole.
    fn on_answered(&self, n: u64, now: Instant) {
        let mut s = self.lock();
        if s.phase != Phase::Busy || s.requests != n {
            return;
        }
        match s.read_while_busy.take() {
            // The next request began while this one was answered.
            Some(t) => {
                s.phase = Phase::Head;
                s.since = t;
            }
            None => {
                s.phase = Phase::Idle;
                s.since = now;
            }
        }
    }

    /// When the connection has broken a limit.
    fn deadline(&self, limits: &Limits) -> Instant {
        let s = self.lock();
        match s.phase {
            Phase::Head => s.since + limits.header_timeout,
            Phase::Busy | Phase::Idle => s.since + limits.idle_timeout,
        }
    }

    /// Since when the connection has not been answered, when it is not being answered.
    fn waiting_since(&self) -> Option<Instant> {
        let s = self.lock();
        match s.phase {
            Phase::Head | Phase::Idle => Some(s.since),
            Phase::Busy => None,
        }
    }
}

/// The open connections, for the limit and for choosing which one makes room.
#[derive(Default)]
struct Registry {
    open: Mutex<Vec<(u64, Arc<ConnState>)>>,
    next: std::sync::atomic::AtomicU64,
}

/// A place in the [`Registry`], given back when dropped.
struct Slot {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.registry.lock();
        if let Some(i) = open.iter().position(|(id, _)| *id == self.id) {
            open.swap_remove(i);
        }
    }
}

enum Admitted {
    /// There was room.
    Free(Slot, Arc<ConnState>),
    /// The oldest connection not being answered was closed to make room.
    Evicted(Slot, Arc<ConnState>),
    /// Every connection is being answered: the new one is closed.
    Refused,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Arc<ConnState>)>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(self: &Arc<Self>, now: Instant, max: usize) -> Admitted {
        let mut open = self.lock();
        let mut evicted = false;
        if open.len() >= max {
            let oldest = open
                .iter()
                .enumerate()
                .filter_map(|(i, (_, c))| c.waiting_since().map(|t| (t, i)))
                .min();
            let Some((_, i)) = oldest else {
                return Admitted::Refused;
            };
            let (_, victim) = open.swap_remove(i);
            victim.evict.cancel();
            evicted = true;
        }
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let state = Arc::new(ConnState::new(now));
        open.push((id, state.clone()));
        let slot = Slot {
            registry: self.clone(),
            id,
        };
        if evicted {
            Admitted::Evicted(slot, state)
        } else {
            Admitted::Free(slot, state)
        }
    }
}

/// The socket, with the connection's limits: a read or write that waits past the
/// deadline of the current [`Phase`] fails, and hyper closes the connection. The timer
/// exists only while the connection waits on the socket.
struct Watched<T> {
    io: T,
    state: Arc<ConnState>,
    limits: Limits,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> Watched<T> {
    fn new(io: T, state: Arc<ConnState>, limits: Limits) -> Self {
        Watched {
            io,
            state,
            limits,
            timer: None,
        }
    }

    fn expired(&self) -> Option<io::Error> {
        let deadline = self.state.deadline(&self.limits);
        (Instant::now() >= deadline).then(|| self.timeout_error())
    }

    fn timeout_error(&self) -> io::Error {
        let what = match self.state.lock().phase {
            Phase::Head => "request headers did not arrive in time",
            Phase::Busy | Phase::Idle => "connection idle too long",
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }

    /// The socket is not ready: wait for it, but not past the deadline.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let deadline = self.state.deadline(&self.limits);
        let timer = match &mut self.timer {
            Some(t) => {
                if t.deadline() != deadline {
                    t.as_mut().reset(deadline);
                }
                t
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(self.timeout_error()),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A client that trickles bytes is never "not ready" for long; check first.
        if let Some(e) = this.expired() {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.state.on_read(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.wait(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, data) {
            Poll::Pending => this.wait(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.wait(cx).map(Err),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.wait(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_shutdown(cx) {
            Poll::Pending => this.wait(cx).map(Err),
            ready => ready,
        }
    }
}

/// The router as a hyper service that tells the connection when a request's headers were
/// read and when its answer was handed over.
#[derive(Clone)]
struct Service {
    inner: hyper_util::service::TowerToHyperService<Router>,
    state: Arc<ConnState>,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<Tracked>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Answer {
        let n = self.state.on_request(Instant::now());
        let answer = self.inner.call(req);
        let state = self.state.clone();
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| Tracked {
                body,
                state,
                request: n,
            }))
        })
    }
}

/// An answer's body that marks the connection idle once hyper is done with it.
struct Tracked {
    body: Body,
    state: Arc<ConnState>,
    request: u64,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.state.on_answered(self.request, Instant::now());
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.state.on_answered(this.request, Instant::now());
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn test_router() -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/big", get(|| async { "x".repeat(100_000) }))
    }

    /// A connection over an in-memory pipe; the returned end is the client's.
    fn start(buffer: usize) -> (DuplexStream, tokio::task::JoinHandle<()>, Arc<ConnState>) {
        let (client, server) = tokio::io::duplex(buffer);
        let state = Arc::new(ConnState::new(Instant::now()));
        let task = tokio::spawn(connection(
            server,
            state.clone(),
            test_router(),
            Limits::new(4),
            CancellationToken::new(),
        ));
        (client, task, state)
    }

    /// Reads one whole answer (headers and `Content-Length` body).
    async fn answer(c: &mut DuplexStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = c.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before a whole answer: {got:?}");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("content-length");
                if body.len() >= len {
                    return text;
                }
            }
        }
    }

    /// Waits until the server closes, returning how long that took.
    async fn closed(c: &mut DuplexStream) -> Duration {
        let t = Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => return t.elapsed(),
                Ok(_) => {}
            }
        }
    }

    /// Asserts that `took` is `limit`, give or take the 100 ms the paused clock may run
    /// past it.
    fn assert_at(took: Duration, limit: Duration) {
        assert!(
            took >= limit && took < limit + Duration::from_millis(100),
            "{took:?}"
        );
    }

    /// Asserts that the server closes `c` at `limit` from now, give or take the paused
    /// clock's 100 ms, and that the connection's task then ends.
    async fn assert_closed_at(
        c: &mut DuplexStream,
        task: tokio::task::JoinHandle<()>,
        limit: Duration,
    ) {
        assert_at(closed(c).await, limit);
        task.await.expect("task");
    }

    async fn send(c: &mut DuplexStream, bytes: &[u8]) {
        c.write_all(bytes).await.expect("write");
    }

    const GET: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

    #[tokio::test(start_paused = true)]
    async fn headers_must_arrive_within_5s_of_the_connection() {
        let (mut c, task, _) = start(4096);
        send(&mut c, b"GET /healthz HT").await;
        assert_closed_at(&mut c, task, Duration::from_secs(5)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_request_is_closed_at_5s_too() {
        let (mut c, task, _) = start(4096);
        let started = Instant::now();
        for b in GET.iter().take(20) {
            if c.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        closed(&mut c).await;
        let took = started.elapsed();
        assert!(took < Duration::from_millis(5500), "{took:?}");
        task.await.expect("task");
    }

    #[tokio::test(start_paused = true)]
    async fn kept_alive_connections_may_idle_60s_then_close() {
        let (mut c, task, _) = start(4096);
        send(&mut c, GET).await;
        assert!(answer(&mut c).await.ends_with("ok\n"));
        // Far longer than the header limit, shorter than the idle one: still served.
        tokio::time::sleep(Duration::from_secs(59)).await;
        send(&mut c, GET).await;
        assert!(answer(&mut c).await.starts_with("HTTP/1.1 200"));
        assert_closed_at(&mut c, task, Duration::from_secs(60)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_request_has_5s_from_its_first_byte() {
        let (mut c, task, _) = start(4096);
        send(&mut c, GET).await;
        answer(&mut c).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        send(&mut c, b"GET /hea").await;
        assert_closed_at(&mut c, task, Duration::from_secs(5)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_cannot_hold_the_connection() {
        let (mut c, task, _) = start(4096);
        send(
            &mut c,
            b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
        )
        .await;
        let started = Instant::now();
        let trickle = async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if c.write_all(b"x").await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(120), trickle).await;
        task.await.expect("task");
        let took = started.elapsed();
        assert!(took <= Duration::from_secs(61), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_larger_than_the_buffer_is_written_whole() {
        let (mut c, task, _) = start(4096);
        send(&mut c, b"GET /big HTTP/1.0\r\n\r\n").await;
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.expect("read");
        let text = String::from_utf8(got).expect("utf-8");
        assert!(text.ends_with(&"x".repeat(100_000)), "{}", text.len());
        task.await.expect("task");
    }

    #[tokio::test(start_paused = true)]
    async fn pipelined_requests_are_answered_in_order() {
        let (mut c, task, _) = start(4096);
        let two = [GET, GET].concat();
        send(&mut c, &two).await;
        let mut all = String::new();
        while all.matches("ok\n").count() < 2 {
            let mut buf = [0u8; 1024];
            let n = c.read(&mut buf).await.expect("read");
            assert!(n > 0);
            all.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert_eq!(all.matches("HTTP/1.1 200").count(), 2, "{all}");
        drop(c);
        task.await.expect("task");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_read_its_answer_is_closed_after_60s() {
        // A pipe smaller than the answer: the write waits on the client.
        let (mut c, task, _) = start(16);
        send(&mut c, GET).await;
        let started = Instant::now();
        task.await.expect("task");
        assert_at(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_takes_the_oldest_connection_not_being_answered() {
        let registry = Arc::new(Registry::default());
        let t0 = Instant::now();
        let admit = |at: Duration| match registry.admit(t0 + at, 3) {
            Admitted::Free(s, c) => (s, c, false),
            Admitted::Evicted(s, c) => (s, c, true),
            Admitted::Refused => panic!("refused"),
        };
        let (_s1, c1, _) = admit(Duration::from_secs(1));
        let (_s2, c2, _) = admit(Duration::ZERO);
        let (_s3, c3, _) = admit(Duration::from_secs(2));
        // c2 is being answered; c1 is now the oldest waiting one.
        c2.on_request(t0);
        let (_s4, c4, evicted) = admit(Duration::from_secs(3));
        assert!(evicted);
        assert!(c1.evict.is_cancelled());
        assert!(!c2.evict.is_cancelled() && !c3.evict.is_cancelled());
        // Every connection busy: the newcomer is refused.
        c3.on_request(t0);
        c4.on_request(t0);
        assert!(matches!(registry.admit(t0, 3), Admitted::Refused));
        // An answered, kept-alive connection can make room again.
        c3.on_answered(1, t0 + Duration::from_secs(4));
        assert!(matches!(registry.admit(t0, 3), Admitted::Evicted(..)));
        assert!(c3.evict.is_cancelled());
    }

    #[tokio::test]
    async fn serve_holds_at_most_max_connections_and_counts_what_it_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = Metrics::new();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            test_router(),
            Limits::new(2),
            metrics.clone(),
            stop.clone(),
        ));
        let mut idle = Vec::new();
        for _ in 0..5 {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"GET /hea").await.expect("write");
            idle.push(s);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The first three made room for the later ones and were closed.
        for s in &mut idle[..3] {
            let mut buf = [0u8; 16];
            let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
                .await
                .expect("closed at once");
            assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        }
        // A probe still gets through, in place of the oldest waiting connection.
        let mut probe = tokio::net::TcpStream::connect(addr).await.expect("connect");
        probe
            .write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
            .await
            .expect("write");
        let mut got = String::new();
        tokio::time::timeout(Duration::from_secs(2), probe.read_to_string(&mut got))
            .await
            .expect("answered")
            .expect("read");
        assert!(
            got.starts_with("HTTP/1.0 200") && got.ends_with("ok\n"),
            "{got}"
        );
        assert!(
            metrics
                .encode()
                .contains("vpcep_approver_http_connections_refused_total 4"),
            "{}",
            metrics.encode()
        );
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .expect("serve returns after the token")
            .expect("task");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
