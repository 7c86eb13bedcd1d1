//! The daemon's business logic: one method per control command. Socket handlers only decode a
//! request and call [`Daemon::handle`]; everything here is plain async Rust over the tracker
//! link, the share registry, the downloads and the persisted state.

mod account;
mod devices;
mod downloads;
mod files;
mod groups;
mod items;
mod names;
mod punch;
mod relay;
pub mod retry;
mod shares;
mod trees;
mod watch;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use tokio::task::JoinHandle;

use minitorr_proto::control::{DaemonStatus, ErrorKind, ErrorReply, Request, Response};
use minitorr_proto::tracker::{self, Call, ErrorCode};

use crate::blocking::BlockingPool;
use crate::config::Config;
use crate::download::Download;
use crate::events::EventBus;
use crate::peerlink::{DeviceKey, PeerLinkMode};
use crate::ratelimit::RateLimiter;
use crate::sharing::live::LiveConns;
use crate::sharing::Shares;
use crate::state::{DownloadRecord, StateFile};
use crate::tracker::{Session, TicketKeys, TrackerLink};

/// A download shown by show_downloads: running in this process, or remembered from before.
// A handful of entries per user: boxing the record would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum DownloadEntry {
    Live(Arc<Download>),
    Record(DownloadRecord),
}

pub struct Daemon {
    pub(crate) cfg: Config,
    pub(crate) tracker: Arc<TrackerLink>,
    pub(crate) session: RwLock<Option<Session>>,
    /// The tracker's ticket keys; shared with the peer server, which verifies tickets with them.
    pub(crate) ticket_keys: Arc<TicketKeys>,
    pub(crate) shares: Arc<Shares>,
    pub(crate) downloads: Mutex<Vec<DownloadEntry>>,
    pub(crate) state: tokio::sync::Mutex<StateFile>,
    pub(crate) pool: BlockingPool,
    pub(crate) download_limit: Arc<RateLimiter>,
    pub(crate) peer_addr: SocketAddr,
    /// This daemon's device key: sent at login (tickets get bound to it) and used on peer links.
    pub(crate) device_key: DeviceKey,
    pub(crate) link: PeerLinkMode,
    pub(crate) heartbeat: Mutex<Option<JoinHandle<()>>>,
    /// The tracker event subscription of the current login (see `tracker::subscribe_events`).
    pub(crate) events: Mutex<Option<JoinHandle<()>>>,
    /// Peer connections we serve, closed on revocation (shared with the peer server).
    pub(crate) live: Arc<LiveConns>,
    /// Login, logout and shutdown never interleave.
    pub(crate) login_lock: tokio::sync::Mutex<()>,
    /// What `status` says about the automatic (device-key) login.
    pub(crate) auto_login: Mutex<String>,
    /// The current session came from the automatic login (a password login may replace it).
    pub(crate) auto_session: std::sync::atomic::AtomicBool,
    /// Resumed downloads whose part files are being re-verified (`[V]`).
    pub(crate) verifying: Mutex<Vec<Arc<files::Verifying>>>,
    /// Download control: reservations, stop intents, the queue and retry (daemon/downloads.rs).
    pub(crate) ctl: downloads::Control,
    /// The watcher of this login's shared files (see `shares.rs`).
    pub(crate) share_watch: Mutex<Option<JoinHandle<()>>>,
    /// Serializes every change to what we share — the tracker's registration, the registry
    /// and the share records — so each one sees the others' outcome: a share the user just
    /// stopped is never re-offered by the watcher, and a tracker event about an earlier
    /// registration never undoes a newer one (see `shares.rs`, `file_removed`). Taken before
    /// `state`; held across tracker calls, never across hashing.
    pub(crate) share_ops: tokio::sync::Mutex<()>,
    /// This login's `Listen` connection to the tracker's relay (peerlink/relay.rs).
    pub(crate) relay_listener: Mutex<Option<JoinHandle<()>>>,
    pub(crate) relay_status: Arc<crate::peerlink::relay::RelayStatus>,
    /// Relayed connections go from the relay listener to the peer server through this.
    pub(crate) relay_inbox: tokio::sync::mpsc::Sender<crate::peerlink::relay::RelayedConn>,
    pub(crate) relay_inbox_rx:
        Mutex<Option<tokio::sync::mpsc::Receiver<crate::peerlink::relay::RelayedConn>>>,
    /// The router port mapping of the peer port, when one was started (`main.rs`).
    pub(crate) portmap: Mutex<Option<Arc<crate::portmap::PortMapper>>>,
    /// Hole punching, shared with the peer server (`crate::punch`).
    pub(crate) punch: Arc<crate::punch::PunchHub>,
    /// What `minitorrctl watch` / `wait` follow: publish with `self.bus.publish(EventKind::…)`.
    pub(crate) bus: EventBus,
}

/// How long `status` waits for the tracker to answer its round trip.
const STATUS_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

/// A control-level error reply, built from whatever went wrong.
pub type Reply<T> = Result<T, ErrorReply>;

impl Daemon {
    pub fn new(
        cfg: Config,
        peer_addr: SocketAddr,
        state: StateFile,
        device_key: DeviceKey,
        link: PeerLinkMode,
    ) -> Arc<Daemon> {
        let tracker = TrackerLink::from_config(&cfg);
        Self::with_tracker(cfg, peer_addr, state, device_key, link, tracker)
    }

    /// [`Daemon::new`] with the tracker link given (in-process tests inject one whose
    /// connector serves a trackerd `Service` over `tokio::io::duplex`).
    pub fn with_tracker(
        cfg: Config,
        peer_addr: SocketAddr,
        state: StateFile,
        device_key: DeviceKey,
        link: PeerLinkMode,
        tracker: TrackerLink,
    ) -> Arc<Daemon> {
        let (relay_inbox, relay_inbox_rx) = tokio::sync::mpsc::channel(64);
        Arc::new(Daemon {
            relay_listener: Mutex::new(None),
            relay_status: Arc::new(crate::peerlink::relay::RelayStatus::default()),
            relay_inbox,
            relay_inbox_rx: Mutex::new(Some(relay_inbox_rx)),
            tracker: Arc::new(tracker),
            session: RwLock::new(None),
            ticket_keys: Arc::new(TicketKeys::default()),
            shares: Arc::new(Shares::default()),
            downloads: Mutex::new(Vec::new()),
            state: tokio::sync::Mutex::new(state),
            pool: BlockingPool::per_core(),
            download_limit: Arc::new(RateLimiter::new(cfg.max_download_rate)),
            peer_addr,
            device_key,
            link,
            heartbeat: Mutex::new(None),
            events: Mutex::new(None),
            live: LiveConns::new(cfg.live_limits()),
            login_lock: tokio::sync::Mutex::new(()),
            auto_login: Mutex::new("off".into()),
            auto_session: std::sync::atomic::AtomicBool::new(false),
            verifying: Mutex::new(Vec::new()),
            ctl: downloads::Control::default(),
            share_watch: Mutex::new(None),
            share_ops: tokio::sync::Mutex::new(()),
            portmap: Mutex::new(None),
            punch: Arc::new(crate::punch::PunchHub::default()),
            bus: EventBus::default(),
            cfg,
        })
    }

    pub fn shares(&self) -> Arc<Shares> {
        self.shares.clone()
    }

    pub fn ticket_keys(&self) -> Arc<TicketKeys> {
        self.ticket_keys.clone()
    }

    pub fn punch_hub(&self) -> Arc<crate::punch::PunchHub> {
        self.punch.clone()
    }

    pub fn live(&self) -> Arc<LiveConns> {
        self.live.clone()
    }

    /// Apply a new download rate limit (SIGHUP).
    pub fn set_download_rate(&self, bytes_per_sec: u64) {
        self.download_limit.set_rate(bytes_per_sec);
    }

    /// The daemon's event bus (`Request::Watch` streams; see `crate::events`).
    pub fn events(&self) -> EventBus {
        self.bus.clone()
    }

    pub fn pool(&self) -> BlockingPool {
        self.pool.clone()
    }

    /// The relayed connections for the peer server (`serve_peers_with_relay`); taken once.
    pub fn take_relay_inbox(
        &self,
    ) -> Option<tokio::sync::mpsc::Receiver<crate::peerlink::relay::RelayedConn>> {
        self.relay_inbox_rx.lock().expect("lock").take()
    }

    /// Answer one control request. Never panics on user input; every failure is a `Response::Error`.
    pub async fn handle(self: &Arc<Self>, mut req: Request) -> Response {
        let name = req.command_name();
        if let Err(e) = names::normalize(&mut req) {
            tracing::info!(command = name, message = %e.message, "request refused");
            return Response::Error(e);
        }
        let result = match req {
            Request::CreateUser { user, password } => self.create_user(user, password).await,
            Request::Login { user, password } => self.login(user, password).await,
            Request::Logout => self.logout().await,
            Request::CreateGroup { group } => self.create_group(group).await,
            Request::JoinGroup { group } => self.join_group(group).await,
            Request::LeaveGroup { group } => self.leave_group(group).await,
            Request::ListRequests { group } => self.list_requests(group).await,
            Request::AcceptRequest { group, user } => self.accept_request(group, user).await,
            Request::RejectRequest { group, user } => self.reject_request(group, user).await,
            Request::ListGroups => self.list_groups().await,
            Request::ListFiles { group } => self.list_files(group).await,
            Request::UploadFile { path, group, name } => self.upload_file(path, group, name).await,
            Request::DownloadFile {
                group,
                file,
                dest,
                only,
            } => self.download_file(group, file, dest, only).await,
            Request::ShowDownloads => Ok(self.show_downloads()),
            Request::StopShare { group, file } => self.stop_share(group, file).await,
            Request::RemoveFile { group, file } => self.remove_file(group, file).await,
            Request::RemoveMember { group, user } => self.remove_member(group, user).await,
            Request::Status => Ok(self.status().await),
            Request::Devices => self.devices().await,
            Request::RevokeDevice { name } => self.revoke_device(name).await,
            Request::CancelDownload { group, file, keep } => {
                self.cancel_download(group, file, keep).await
            }
            Request::PauseDownload { group, file } => self.pause_download(group, file).await,
            Request::ResumeDownload { group, file } => self.resume_download(group, file).await,
            Request::RemoveDownload { which } => self.remove_downloads(which).await,
            Request::ListShares => self.list_shares().await,
            Request::ListItem { group, item } => self.list_item(group, item).await,
            // Streams are served by the control socket (`Daemon::watch`), not as one answer.
            Request::Watch { .. } => Err(fail(
                ErrorKind::InvalidInput,
                "watch streams events; send it as the request of its own control connection",
            )),
        };
        if matches!(result, Ok(Response::LoggedIn(_))) {
            // Downloads queued before a restart start now; failed ones are watched for holders.
            self.pump_queue();
            self.ensure_control_task();
        }
        let resp = result.unwrap_or_else(Response::Error);
        if let Response::Error(e) = &resp {
            tracing::info!(command = name, kind = ?e.kind, message = %e.message, "request refused");
        }
        resp
    }

    async fn status(&self) -> Response {
        let tracker_reachable = self.tracker.probe(STATUS_PROBE_TIMEOUT).await;
        let session = self.session.read().expect("lock").clone();
        let downloads = self.downloads.lock().expect("lock").len() as u32;
        Response::Status(DaemonStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            user: session.as_ref().map(|s| s.user.clone()),
            tracker: Some(self.tracker.current_addr().to_string()),
            tracker_connected: self.tracker.is_connected(),
            peer_addr: self.peer_addr.to_string(),
            shares: self.shares.len() as u32,
            downloads,
            tracker_reachable,
            auto_login: self.auto_login.lock().expect("lock").clone(),
            device_name: self.cfg.device_name.clone(),
            observed_addr: session.as_ref().map(|s| s.peer_addr.clone()),
            relay: self.relay_status_line(session.as_ref()),
            port_mapping: self
                .portmap
                .lock()
                .expect("lock")
                .as_ref()
                .map(|m| m.status())
                .unwrap_or_default(),
        })
    }

    /// Use `m` for `status` and for the address announced at login.
    pub fn set_port_mapper(&self, m: Arc<crate::portmap::PortMapper>) {
        *self.portmap.lock().expect("lock") = Some(m);
    }

    /// The peer address to announce at login: the router's mapped address when there is one
    /// (the tracker keeps only its port unless it trusts announced addresses), else `listen`.
    pub(crate) fn announced_peer_addr(&self) -> String {
        let mapped = self
            .portmap
            .lock()
            .expect("lock")
            .as_ref()
            .and_then(|m| m.external_addr());
        mapped.unwrap_or(self.peer_addr).to_string()
    }

    pub(crate) fn current_session(&self) -> Reply<Session> {
        self.session
            .read()
            .expect("lock")
            .clone()
            .ok_or_else(|| fail(ErrorKind::NotLoggedIn, "not logged in"))
    }

    /// Call the tracker as the logged-in user; tracker refusals become control errors.
    pub(crate) async fn call(&self, call: Call) -> Reply<tracker::Response> {
        let session = self.current_session()?;
        self.call_with(Some(&session.token), call).await
    }

    pub(crate) async fn call_with(
        &self,
        token: Option<&str>,
        call: Call,
    ) -> Reply<tracker::Response> {
        match self.tracker.call(token, call).await {
            Ok(tracker::Response::Error { code, message }) => Err(tracker_error(code, message)),
            Ok(resp) => Ok(resp),
            Err(e) => Err(fail(ErrorKind::TrackerUnavailable, e.to_string())),
        }
    }

    pub(crate) async fn save_state(&self, state: &StateFile) {
        let path = self.cfg.state_file();
        if let Err(e) = state.save(&path) {
            tracing::error!(path = %path.display(), error = %e, "cannot save state");
        }
    }

    /// Graceful shutdown: stop downloads (they resume at next login), go offline at the tracker.
    pub async fn shutdown(self: &Arc<Self>) {
        let _guard = self.login_lock.lock().await;
        self.stop_activity();
        let token = self.session.write().expect("lock").take().map(|s| s.token);
        if let Some(token) = token {
            let logout = self.tracker.call(Some(&token), Call::Logout);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), logout).await;
        }
        let state = self.state.lock().await;
        self.save_state(&state).await;
        drop(state);
        let portmap = self.portmap.lock().expect("lock").clone();
        if let Some(m) = portmap {
            m.release().await;
        }
    }

    /// Pause downloads, stop serving, stop heartbeats (logout and shutdown).
    pub(crate) fn stop_activity(&self) {
        self.stop_control();
        if let Some(h) = self.heartbeat.lock().expect("lock").take() {
            h.abort();
        }
        if let Some(h) = self.events.lock().expect("lock").take() {
            h.abort();
        }
        if let Some(h) = self.share_watch.lock().expect("lock").take() {
            h.abort();
        }
        if let Some(h) = self.relay_listener.lock().expect("lock").take() {
            h.abort();
        }
        for entry in self.downloads.lock().expect("lock").drain(..) {
            if let DownloadEntry::Live(d) = entry {
                d.pause();
            }
        }
        self.shares.clear();
        self.ticket_keys.clear();
        // Open peer connections too, not just new ones (revocation is live).
        let closed = self.live.close_all();
        if closed > 0 {
            tracing::info!(closed, "closed every peer connection");
        }
    }
}

/// A control-level error.
pub(crate) fn fail(kind: ErrorKind, message: impl Into<String>) -> ErrorReply {
    ErrorReply {
        kind,
        message: message.into(),
    }
}

/// Map the tracker's error codes onto what the CLI reports (and its exit status).
pub(crate) fn tracker_error(code: ErrorCode, message: String) -> ErrorReply {
    let kind = match code {
        ErrorCode::BadRequest => ErrorKind::InvalidInput,
        ErrorCode::InvalidSession => ErrorKind::NotLoggedIn,
        ErrorCode::NotFound => ErrorKind::NotFound,
        ErrorCode::Internal => ErrorKind::Internal,
        ErrorCode::QuotaExceeded => ErrorKind::QuotaExceeded,
        ErrorCode::DatabaseUnavailable => ErrorKind::TrackerDatabaseUnavailable,
        ErrorCode::AuthFailed
        | ErrorCode::AlreadyExists
        | ErrorCode::Forbidden
        | ErrorCode::Conflict
        | ErrorCode::RateLimited => ErrorKind::Refused,
    };
    fail(kind, message)
}

pub(crate) fn unexpected(resp: tracker::Response) -> ErrorReply {
    fail(
        ErrorKind::Internal,
        format!("unexpected tracker answer: {resp:?}"),
    )
}

impl Daemon {
    /// Set the metrics' gauges (downloads by state, peers connected) from what the daemon
    /// holds now; called by the metrics listener before each scrape.
    pub fn refresh_metrics(&self) {
        crate::metrics::global().set_gauges(&self.show_downloads(), self.live.len());
    }
}
