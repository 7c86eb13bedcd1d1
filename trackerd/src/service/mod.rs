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
//! * Files are keyed by (group, name). Sharing a name that exists with a different SHA1 (or the
//!   same SHA1 with a different piece layout) is a `Conflict`; the same file adds the user as a
//!   holder. `GetFile` returns the online holders (complete ones first) and a signed ticket.
//! * Every mutation is answered only after its transaction committed. Database failures become
//!   `Internal` (logged); client input never panics.

mod accounts;
mod files;
mod groups;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::{SigningKey, VerifyingKey};
use minitorr_proto::tracker::{Call, ErrorCode, Request, Response};

use crate::auth::{PasswordHasher, RateLimiter};
use crate::store::{SessionRow, Store, StoreError};

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

pub struct Service {
    store: Store,
    key: SigningKey,
    timing: Timing,
    hasher: PasswordHasher,
    limiter: Mutex<RateLimiter>,
    clock: Clock,
    /// A hash of our own cost to verify against when the user does not exist, so that "no such
    /// user" takes as long as "wrong password" and does not reveal which names exist.
    dummy_phc: String,
    /// Password hashes computed at once. Each argon2 run holds `m_cost` (19 MiB by default) and
    /// a core: unbounded, a burst of logins (or a hostile client) grows memory without limit
    /// and starves every other request of CPU. Excess logins wait their turn.
    hash_slots: tokio::sync::Semaphore,
}

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
    /// Build the service on an opened store, loading (or creating) the shared signing key.
    pub async fn new(
        store: Store,
        timing: Timing,
        hasher: PasswordHasher,
        clock: Clock,
    ) -> Result<Service, InitError> {
        let candidate = SigningKey::generate(&mut rand::rngs::OsRng);
        let now = clock() as i64;
        let hex = store
            .signing_key_hex(&hex::encode(candidate.to_bytes()), now)
            .await?;
        let mut secret = [0u8; 32];
        hex::decode_to_slice(&hex, &mut secret)
            .map_err(|e| StoreError::Corrupt(format!("tracker signing key: {e}")))?;
        let key = SigningKey::from_bytes(&secret);
        let h = hasher.clone();
        let dummy_phc = tokio::task::spawn_blocking(move || h.hash("not anyone's password"))
            .await
            .map_err(|e| InitError::Hash(e.to_string()))?
            .map_err(|e| InitError::Hash(e.to_string()))?;
        Ok(Service {
            store,
            key,
            timing,
            hasher,
            limiter: Mutex::new(RateLimiter::default()),
            clock,
            dummy_phc,
            hash_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        })
    }

    /// Public half of the ticket-signing key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
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
        let what = call_name(&req.call);
        match self.dispatch(req, peer_ip).await {
            Ok(r) => r,
            Err(Fail::Client(code, message)) => Response::err(code, message),
            Err(Fail::Store(e)) => {
                tracing::error!(call = what, error = %e, "request failed");
                Response::err(
                    ErrorCode::Internal,
                    "internal tracker error (see the tracker log)",
                )
            }
            Err(Fail::Other(e)) => {
                tracing::error!(call = what, error = %e, "request failed");
                Response::err(
                    ErrorCode::Internal,
                    "internal tracker error (see the tracker log)",
                )
            }
        }
    }

    async fn dispatch(&self, req: Request, peer_ip: IpAddr) -> Outcome {
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
            call => {
                let caller = self.authenticate(req.token.as_deref()).await?;
                self.dispatch_authenticated(&caller, call).await
            }
        }
    }

    async fn dispatch_authenticated(&self, caller: &Caller, call: Call) -> Outcome {
        match call {
            Call::CreateUser { .. } | Call::Login { .. } => {
                fail(ErrorCode::BadRequest, "already logged in")
            }
            Call::Logout => self.logout(caller).await,
            Call::Heartbeat => self.heartbeat(caller).await,
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
            } => self.share(caller, &group, meta, complete).await,
            Call::StopShare { group, file } => self.stop_share(caller, &group, &file).await,
            Call::GetFile { group, file } => self.get_file(caller, &group, &file).await,
        }
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
            None => fail(
                ErrorCode::InvalidSession,
                "session expired or revoked: log in again",
            ),
        }
    }
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
        Call::GetFile { .. } => "get_file",
        Call::Heartbeat => "heartbeat",
    }
}
