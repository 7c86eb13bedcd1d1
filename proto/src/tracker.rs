//! `minitorrd` ↔ `trackerd`, over TCP. Requests carry the session token (except `CreateUser`
//! and `Login`), so any tracker sharing the database can serve any request: failover needs no
//! re-login.

use serde::{Deserialize, Serialize};

use crate::ticket::Ticket;
use crate::types::{FileMeta, FileSummary, GroupSummary, PeerInfo};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Request {
    /// Session token from `Login`; `None` only for `CreateUser` and `Login`.
    pub token: Option<String>,
    pub call: Call,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum Call {
    CreateUser {
        user: String,
        password: String,
    },
    /// `peer_addr` is where this daemon serves pieces; an unspecified IP (0.0.0.0) is replaced
    /// by the address the tracker sees the connection come from. `device_key` is the daemon's
    /// long-lived Ed25519 public key: the tracker binds this session's tickets to it and lists
    /// it with the session's shares so downloaders can pin the holder's TLS key.
    Login {
        user: String,
        password: String,
        peer_addr: String,
        device_key: [u8; 32],
    },
    Logout,
    CreateGroup {
        group: String,
    },
    ListGroups,
    JoinGroup {
        group: String,
    },
    LeaveGroup {
        group: String,
    },
    ListRequests {
        group: String,
    },
    AcceptRequest {
        group: String,
        user: String,
    },
    RejectRequest {
        group: String,
        user: String,
    },
    ListFiles {
        group: String,
    },
    /// Register (or re-announce) that this session holds `meta`; `complete` is false while it
    /// is still downloading (partial seeding).
    Share {
        group: String,
        meta: FileMeta,
        complete: bool,
    },
    StopShare {
        group: String,
        file: String,
    },
    /// Everything needed to download: metadata, piece hashes, online holders, and a ticket.
    GetFile {
        group: String,
        file: String,
    },
    /// Keeps the session online; sent every `heartbeat_secs`.
    Heartbeat,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum Response {
    Ok { message: String },
    LoggedIn(LoginGrant),
    Groups(Vec<GroupSummary>),
    Requests(Vec<String>),
    Files(Vec<FileSummary>),
    File(FileDetails),
    Error { code: ErrorCode, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LoginGrant {
    pub token: String,
    pub user: String,
    /// The tracker's Ed25519 public key, to verify download tickets offline.
    pub tracker_key: [u8; 32],
    /// How often the daemon must send `Heartbeat` to stay listed as online.
    pub heartbeat_secs: u32,
    /// This session's peer address as the tracker will hand it out.
    pub peer_addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct FileDetails {
    pub group: String,
    pub meta: FileMeta,
    /// Online peers holding all or part of the file, excluding the asking session.
    pub peers: Vec<PeerInfo>,
    pub ticket: Ticket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum ErrorCode {
    /// Malformed or invalid arguments (bad names, inconsistent metadata).
    BadRequest,
    /// Wrong user id or password.
    AuthFailed,
    /// Missing, expired or revoked session token: log in again.
    InvalidSession,
    NotFound,
    AlreadyExists,
    /// Authenticated but not allowed (not a member, not the owner).
    Forbidden,
    /// Conflicts with existing state (same name, different content).
    Conflict,
    RateLimited,
    Internal,
}

impl Response {
    pub fn err(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error {
            code,
            message: message.into(),
        }
    }

    pub fn ok(message: impl Into<String>) -> Response {
        Response::Ok {
            message: message.into(),
        }
    }
}

crate::postcard_wire!(Request, Response);
