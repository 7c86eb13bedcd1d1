//! The tracker's business logic, independent of sockets: [`Service::handle`] turns one
//! [`Request`] into one [`Response`].
//!
//! Rules (the seed's semantics, made precise):
//!
//! * Every call except `CreateUser` and `Login` needs a valid session token, else
//!   `InvalidSession`. Sessions expire after `session_ttl_secs` without a heartbeat; a session
//!   is *online* while heard from within `peer_timeout_secs`.
//! * `Logout` revokes the token; the user's shares stay registered (they are offline until the
//!   daemon logs in and re-announces).
//! * Groups: the creator is owner and first member. Joining creates a pending request the owner
//!   accepts or rejects.
//! * Leaving a group drops the user's shares there (a file nobody shares any more disappears).
//!   An owner who leaves hands the group to the longest-standing remaining member: the one
//!   whose membership began first, by a per-group join counter (so two members accepted within
//!   the same second are still ordered; the creator is number 1). When the last member leaves,
//!   the group is deleted with its pending requests and files.
//! * Every name in a request is brought to Unicode NFC and checked (look-alike characters
//!   refused) before anything else, in `names`.
//! * Files are keyed by (group, name). Sharing a name that exists with a different SHA1 (or the
//!   same SHA1 with a different piece layout) is a `Conflict`; the same file adds the user as a
//!   holder. A new entry counts against its registering member's quota ([`Policy`]); only the
//!   group owner can remove an entry (`RemoveFile`) with every share of it. `GetFile` returns
//!   the online holders (complete ones first) and a signed ticket.
//! * Every mutation is answered only after its transaction committed. Database failures become
//!   `Internal` (logged); client input never panics. A database that is down, unreachable or
//!   locked becomes `DatabaseUnavailable` within about 2 s (pool acquire timeout, SQLite busy
//!   timeout, and a 5 s deadline on a request's database work), never a hang.

mod accounts;
mod devices;
mod events;
mod files;
mod groups;
mod names;
mod punch_budget;
mod relay;

pub use events::{
    Subscription, POLL_EVERY as EVENT_POLL_EVERY, RETENTION_SECS as EVENT_RETENTION_SECS,
};

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::{SigningKey, VerifyingKey};
use minitorr_proto::ticket::{Ticket, TicketClaims, TicketKey, MAX_TICKET_KEYS};
use minitorr_proto::tracker::{Call, ErrorCode, Request, Response};

use crate::auth::{PasswordHasher, RateLimiter};
use crate::store::{Quota, SessionRow, Store, StoreError};

/// Source of "now" in unix seconds; injectable so tests can move time without sleeping.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

/// The timing knobs of the protocol (from the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat_secs: u32,
    pub peer_timeout_secs: u64,
    pub session_ttl_secs: u64,
    pub ticket_ttl_secs: u64,
}

impl Default for Timing {
    fn default() -> Self {
        use crate::config::*;
        Timing {
            heartbeat_secs: DEFAULT_HEARTBEAT_SECS,
            peer_timeout_secs: DEFAULT_PEER_TIMEOUT_SECS,
            session_ttl_secs: DEFAULT_SESSION_TTL_SECS,
            ticket_ttl_secs: DEFAULT_TICKET_TTL_SECS,
        }
    }
}

/// The key new tickets are signed with, and when the database says it retires.
struct Signer {
    key: SigningKey,
    retire_at: Option<u64>,
}

/// What the operator allows members (from the config): quotas on what one member may
/// register, and whether the peer address a daemon announces is believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub quota: Quota,
    /// Most pieces (hence piece hashes: 20 bytes on the wire, 40 in the database) one file
    /// entry may have. Bounds the metadata, not the file size: bigger pieces, bigger files.
    pub max_pieces_per_file: u32,
    /// Hand out the IP a daemon announces instead of the one its connection comes from.
    pub trust_announced_peer_addr: bool,
    /// The relay address handed out at login (`relay_public_addr` or `relay_listen`).
    pub relay_addr: Option<std::net::SocketAddr>,
}

impl Default for Policy {
    fn default() -> Self {
        use crate::config::*;
        Policy {
            quota: Quota {
                files_per_group: DEFAULT_QUOTA_FILES_PER_GROUP,
                files: DEFAULT_QUOTA_FILES,
                bytes: DEFAULT_QUOTA_BYTES,
                pieces: DEFAULT_QUOTA_PIECES,
            },
            max_pieces_per_file: DEFAULT_MAX_PIECES_PER_FILE,
            trust_announced_peer_addr: false,
            relay_addr: None,
        }
    }
}

pub struct Service {
    store: Store,
    signer: RwLock<Signer>,
    policy: Policy,
    timing: Timing,
    hasher: PasswordHasher,
    limiter: Arc<Mutex<RateLimiter>>,
    /// Signalled whenever a login attempt finishes, for attempts waiting on a busy key.
    login_done: Arc<tokio::sync::Notify>,
    clock: Clock,
    /// A hash of our own cost to verify against when the user does not exist, so that "no such
    /// user" takes as long as "wrong password" and does not reveal which names exist.
    dummy_phc: String,
    /// Password hashes computed at once. Each argon2 run holds `m_cost` (19 MiB by default) and
    /// a core: unbounded, a burst of logins (or a hostile client) grows memory without limit
    /// and starves every other request of CPU. Excess logins wait their turn.
    hash_slots: tokio::sync::Semaphore,
    /// Passwords verified against a stored (or the dummy) hash since start: what a guesser got
    /// to try. Read by tests and useful as a metric.
    password_checks: Arc<AtomicU64>,
    /// Wakes event subscribers (see `events`).
    events: Arc<events::EventHub>,
    /// Nonces issued for device logins (see `devices`).
    nonces: Mutex<crate::auth::DeviceNonces>,
    /// This deployment's identity (shared by the trackers of one database), signed into
    /// device logins.
    tracker_id: [u8; 32],
    /// Requests building an item's whole metadata at once (`GetFile`, `ListItem`, a tree's
    /// `Share`). The largest item's listing and piece list take some tens of MiB while being
    /// read, parsed and answered; this bounds how many are in memory together.
    metadata_slots: tokio::sync::Semaphore,
    /// Operators' metrics, recorded in [`Service::handle`].
    metrics: Arc<crate::metrics::TrackerMetrics>,
    /// Hole punches each member may still ask for (issue #14).
    punches: Mutex<punch_budget::PunchBudget>,
}

/// Items whose metadata is loaded or checked at once (see `Service::metadata_slots`).
pub const METADATA_SLOTS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot prepare password hashing: {0}")]
    Hash(String),
}

/// Why a request failed: either the client's fault (answered as is) or ours (logged, `Internal`).
#[derive(Debug)]
enum Fail {
    Client(ErrorCode, String),
    Store(StoreError),
    Other(String),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

type Outcome = Result<Response, Fail>;

fn fail<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Client(code, message.into()))
}

/// Map a name validation error to `BadRequest` with its message.
fn valid(r: Result<(), minitorr_proto::names::NameError>) -> Result<(), Fail> {
    r.map_err(|e| Fail::Client(ErrorCode::BadRequest, e.to_string()))
}

/// An authenticated caller.
struct Caller {
    token_hash: String,
    session: SessionRow,
}

impl Service {
    /// A service signing with a fresh random key (tests and tools; nothing persists it).
    /// trackerd itself uses [`Service::with_signing_key`] with its key file.
    pub async fn new(
        store: Store,
        timing: Timing,
        hasher: PasswordHasher,
        clock: Clock,
    ) -> Result<Service, InitError> {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        Self::with_signing_key(store, timing, hasher, clock, key).await
    }

    /// Build the service on an opened store, signing tickets with `key` (from the key file,
    /// see [`crate::keys`]); its public half is published in the database.
    pub async fn with_signing_key(
        store: Store,
        timing: Timing,
        hasher: PasswordHasher,
        clock: Clock,
        key: SigningKey,
    ) -> Result<Service, InitError> {
        let now = clock() as i64;
        let public_hex = hex::encode(key.verifying_key().to_bytes());
        store.publish_ticket_key(&public_hex, now).await?;
        let retire_at = retire_time(store.ticket_key(&public_hex).await?);
        let h = hasher.clone();
        let dummy_phc = tokio::task::spawn_blocking(move || h.hash("not anyone's password"))
            .await
            .map_err(|e| InitError::Hash(e.to_string()))?
            .map_err(|e| InitError::Hash(e.to_string()))?;
        let events = events::EventHub::new(store.last_event_id().await?, timing.ticket_ttl_secs);
        let tracker_id = {
            use rand::RngCore;
            let mut candidate = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut candidate);
            store.tracker_identity(&candidate).await?
        };
        Ok(Service {
            punches: Mutex::default(),
            nonces: Mutex::default(),
            tracker_id,
            events,
            store,
            signer: RwLock::new(Signer { key, retire_at }),
            policy: Policy::default(),
            timing,
            hasher,
            limiter: Arc::default(),
            login_done: Arc::default(),
            clock,
            dummy_phc,
            hash_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            password_checks: Arc::default(),
            metadata_slots: tokio::sync::Semaphore::new(METADATA_SLOTS),
            metrics: Arc::default(),
        })
    }

    /// Replace the default [`Policy`] (quotas, announced addresses) with the configured one.
    pub fn with_policy(mut self, policy: Policy) -> Service {
        self.policy = policy;
        self
    }

    /// Public half of the key new tickets are signed with.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signer.read().expect("lock").key.verifying_key()
    }

    /// Sign new tickets with `key` from now on (a rotated key file); publishes it if needed.
    pub async fn use_signing_key(&self, key: SigningKey) -> Result<(), StoreError> {
        let public_hex = hex::encode(key.verifying_key().to_bytes());
        self.store
            .publish_ticket_key(&public_hex, self.now() as i64)
            .await?;
        let retire_at = retire_time(self.store.ticket_key(&public_hex).await?);
        *self.signer.write().expect("lock") = Signer { key, retire_at };
        Ok(())
    }

    /// Re-read when our signing key retires (set by `rotate-key`, possibly from another
    /// process): tickets are never issued to outlive their key.
    pub async fn refresh_signer(&self) -> Result<(), StoreError> {
        let public = self.verifying_key().to_bytes();
        let state = self.store.ticket_key(&hex::encode(public)).await?;
        let retire_at = retire_time(state).or(if state.is_none() {
            // Our key was removed from the table (retired long ago and forgotten).
            Some(0)
        } else {
            None
        });
        let mut signer = self.signer.write().expect("lock");
        if signer.key.verifying_key().to_bytes() == public {
            if retire_at.is_some_and(|t| t < self.now()) && signer.retire_at != retire_at {
                tracing::error!(
                    key = %crate::keys::key_id(&public),
                    "this tracker's signing key is retired: seeders refuse its tickets; install the current key file or run `trackerd rotate-key`"
                );
            }
            signer.retire_at = retire_at;
        }
        Ok(())
    }

    /// Sign `claims` with the current key; the expiry is cut to the key's retirement.
    fn sign_ticket(&self, mut claims: TicketClaims) -> Ticket {
        let signer = self.signer.read().expect("lock");
        if let Some(t) = signer.retire_at {
            claims.expires_unix = claims.expires_unix.min(t);
        }
        Ticket::sign(claims, &signer.key)
    }

    /// The public keys whose tickets verify now (every tracker's; seeders accept any).
    async fn ticket_keys(&self) -> Result<Vec<TicketKey>, Fail> {
        let rows = self.store.valid_ticket_keys(self.now() as i64).await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows.into_iter().take(MAX_TICKET_KEYS) {
            keys.push(TicketKey {
                public: crate::store::public_from_hex(&row.public_hex)?,
                valid_until: row.retire_at.map(|t| t.max(0) as u64),
            });
        }
        Ok(keys)
    }

    /// How many login passwords have been verified since start (right or wrong).
    pub fn password_checks(&self) -> u64 {
        self.password_checks.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    /// Sessions last seen before this are expired.
    fn expired_before(&self) -> i64 {
        self.now().saturating_sub(self.timing.session_ttl_secs) as i64
    }

    /// Sessions last seen at or after this are online.
    fn online_since(&self) -> i64 {
        self.now().saturating_sub(self.timing.peer_timeout_secs) as i64
    }

    /// Answer one request. `peer_ip` is the connection's source address.
    pub async fn handle(&self, req: Request, peer_ip: IpAddr) -> Response {
        let started = std::time::Instant::now();
        let what = call_name(&req.call);
        let response = self.handle_inner(req, peer_ip, what).await;
        self.metrics.record(what, &response, started.elapsed());
        response
    }

    /// The operators' metrics (see `crate::metrics`).
    pub fn metrics(&self) -> &Arc<crate::metrics::TrackerMetrics> {
        &self.metrics
    }

    /// Count users, online sessions, groups and files into the metrics' gauges.
    pub async fn refresh_metrics(&self) -> Result<(), StoreError> {
        self.metrics.refresh(&self.store, self.online_since()).await
    }

    async fn handle_inner(&self, req: Request, peer_ip: IpAddr, what: &'static str) -> Response {
        // Calls that may write revocation events (see `store::events`).
        let emits = matches!(
            req.call,
            Call::LeaveGroup { .. }
                | Call::RemoveMember { .. }
                | Call::StopShare { .. }
                | Call::RemoveFile { .. }
                | Call::Punch { .. }
        );
        // Login and CreateUser may wait their turn for a password-hashing slot, legitimately
        // for long; their database steps are still bounded by the pool's acquire timeout.
        let hashes = matches!(req.call, Call::Login { .. } | Call::CreateUser { .. });
        // Calls that build an item's whole metadata wait for a slot first, outside the
        // database deadline: waiting behind other big items is not the database failing.
        let tree_share = matches!(&req.call, Call::Share { meta, .. } if meta.is_tree());
        let big = tree_share || matches!(req.call, Call::GetFile { .. } | Call::ListItem { .. });
        let _slot = if big {
            self.metadata_slots.acquire().await.ok()
        } else {
            None
        };
        let result = if hashes {
            self.dispatch(req, peer_ip).await
        } else {
            // A tree's Share also checks up to 262,144 paths and writes megabytes (CPU work, not
            // the database hanging): it gets three times the deadline.
            let deadline = if tree_share {
                crate::store::DB_REQUEST_DEADLINE * 3
            } else {
                crate::store::DB_REQUEST_DEADLINE
            };
            tokio::time::timeout(deadline, self.dispatch(req, peer_ip))
                .await
                .unwrap_or(Err(Fail::Store(StoreError::Deadline(deadline))))
        };
        if emits && result.is_ok() {
            self.events_committed().await;
        }
        match result {
            Ok(r) => r,
            Err(f) => self.answer_failure(what, f),
        }
    }

    /// The response for a failed call; our own failures are logged and answered `Internal`.
    fn answer_failure(&self, what: &str, f: Fail) -> Response {
        match f {
            Fail::Client(code, message) => Response::err(code, message),
            Fail::Store(e) if e.is_unavailable() => {
                tracing::warn!(call = what, error = %e, "database unavailable");
                Response::err(
                    ErrorCode::DatabaseUnavailable,
                    "tracker database unavailable; try again later",
                )
            }
            Fail::Store(e) => {
                tracing::error!(call = what, error = %e, "request failed");
                Response::err(
                    ErrorCode::Internal,
                    "internal tracker error (see the tracker log)",
                )
            }
            Fail::Other(e) => {
                tracing::error!(call = what, error = %e, "request failed");
                Response::err(
                    ErrorCode::Internal,
                    "internal tracker error (see the tracker log)",
                )
            }
        }
    }

    async fn dispatch(&self, mut req: Request, peer_ip: IpAddr) -> Outcome {
        names::normalize(&mut req.call)?;
        match req.call {
            Call::CreateUser { user, password } => self.create_user(user, password).await,
            Call::Login {
                user,
                password,
                peer_addr,
                device_key,
            } => {
                self.login(user, password, peer_addr, device_key, peer_ip)
                    .await
            }
            Call::DeviceChallenge { user, device_key } => {
                self.device_challenge(user, device_key).await
            }
            Call::DeviceLogin {
                user,
                device_key,
                peer_addr,
                nonce,
                signature,
                device_name,
            } => {
                let proof = devices::DeviceProof {
                    nonce,
                    signature,
                    device_name,
                };
                self.device_login(user, device_key, peer_addr, proof, peer_ip)
                    .await
            }
            call => {
                let caller = self.authenticate(req.token.as_deref()).await?;
                self.dispatch_authenticated(&caller, call).await
            }
        }
    }

    async fn dispatch_authenticated(&self, caller: &Caller, call: Call) -> Outcome {
        match call {
            Call::CreateUser { .. }
            | Call::Login { .. }
            | Call::DeviceChallenge { .. }
            | Call::DeviceLogin { .. } => fail(ErrorCode::BadRequest, "already logged in"),
            Call::NameDevice { name } => self.name_device(caller, &name).await,
            Call::ListDevices => self.list_devices(caller).await,
            Call::RevokeDevice { name } => self.revoke_device(caller, &name).await,
            Call::LogoutDevice => self.logout_device(caller).await,
            Call::Logout => self.logout(caller).await,
            Call::Heartbeat => self.heartbeat(caller).await,
            Call::TicketKeys => Ok(Response::TicketKeys(self.ticket_keys().await?)),
            Call::CreateGroup { group } => self.create_group(caller, &group).await,
            Call::ListGroups => self.list_groups(caller).await,
            Call::JoinGroup { group } => self.join_group(caller, &group).await,
            Call::LeaveGroup { group } => self.leave_group(caller, &group).await,
            Call::ListRequests { group } => self.list_requests(caller, &group).await,
            Call::AcceptRequest { group, user } => self.decide(caller, &group, &user, true).await,
            Call::RejectRequest { group, user } => self.decide(caller, &group, &user, false).await,
            Call::ListFiles { group } => self.list_files(caller, &group).await,
            Call::Share {
                group,
                meta,
                complete,
            } => {
                // Ours alone once decoded: no copy.
                let meta = std::sync::Arc::unwrap_or_clone(meta);
                self.share(caller, &group, meta, complete).await
            }
            Call::StopShare { group, file } => self.stop_share(caller, &group, &file).await,
            Call::RemoveFile { group, file } => self.remove_file(caller, &group, &file).await,
            Call::GetFile { group, file } => self.get_file(caller, &group, &file).await,
            Call::GetHolders { group, file } => self.get_holders(caller, &group, &file).await,
            Call::ListItem { group, item } => self.list_item(caller, &group, &item).await,
            Call::RemoveMember { group, user } => self.remove_member(caller, &group, &user).await,
            Call::Subscribe { .. } => fail(
                ErrorCode::BadRequest,
                "subscribe needs a connection of its own (the server streams events on it)",
            ),
            Call::Punch {
                group,
                file,
                peer,
                nonce,
            } => self.punch(caller, &group, &file, &peer, nonce).await,
        }
    }

    /// This deployment's identity (what device logins sign, with the nonce).
    pub fn tracker_id(&self) -> [u8; 32] {
        self.tracker_id
    }

    /// Sessions were deleted (logout, replaced by a new login, device revoked): event
    /// subscriptions re-check theirs now instead of at their next keepalive.
    fn sessions_ended(&self) {
        self.events.sessions_ended();
    }

    /// Whether `token` is a live session (a database error counts as no).
    pub async fn session_is_valid(&self, token: &str) -> bool {
        self.authenticate(Some(token)).await.is_ok()
    }

    async fn authenticate(&self, token: Option<&str>) -> Result<Caller, Fail> {
        let Some(token) = token else {
            return fail(ErrorCode::InvalidSession, "not logged in");
        };
        let token_hash = crate::auth::token_hash(token);
        match self
            .store
            .session(&token_hash, self.expired_before())
            .await?
        {
            Some(session) => Ok(Caller {
                token_hash,
                session,
            }),
            None => fail(ErrorCode::InvalidSession, "session expired or revoked"),
        }
    }
}

/// `ticket_keys` row state → retirement time (`None`: not scheduled or not published).
fn retire_time(state: Option<Option<i64>>) -> Option<u64> {
    state.flatten().map(|t| t.max(0) as u64)
}

fn call_name(c: &Call) -> &'static str {
    match c {
        Call::CreateUser { .. } => "create_user",
        Call::Login { .. } => "login",
        Call::Logout => "logout",
        Call::CreateGroup { .. } => "create_group",
        Call::ListGroups => "list_groups",
        Call::JoinGroup { .. } => "join_group",
        Call::LeaveGroup { .. } => "leave_group",
        Call::ListRequests { .. } => "list_requests",
        Call::AcceptRequest { .. } => "accept_request",
        Call::RejectRequest { .. } => "reject_request",
        Call::ListFiles { .. } => "list_files",
        Call::Share { .. } => "share",
        Call::StopShare { .. } => "stop_share",
        Call::RemoveFile { .. } => "remove_file",
        Call::GetFile { .. } => "get_file",
        Call::Heartbeat => "heartbeat",
        Call::TicketKeys => "ticket_keys",
        Call::RemoveMember { .. } => "remove_member",
        Call::Subscribe { .. } => "subscribe",
        Call::DeviceChallenge { .. } => "device_challenge",
        Call::DeviceLogin { .. } => "device_login",
        Call::NameDevice { .. } => "name_device",
        Call::ListDevices => "list_devices",
        Call::RevokeDevice { .. } => "revoke_device",
        Call::LogoutDevice => "logout_device",
        Call::ListItem { .. } => "list_item",
        Call::Punch { .. } => "punch",
        Call::GetHolders { .. } => "get_holders",
    }
}
