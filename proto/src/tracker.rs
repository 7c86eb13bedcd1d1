//! `minitorrd` ↔ `trackerd`, over TCP. Requests carry the session token (except `CreateUser`
//! and `Login`), so any tracker sharing the database can serve any request: failover needs no
//! re-login.

use serde::{Deserialize, Serialize};

use crate::ticket::{Ticket, TicketKey};
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
    /// `peer_addr` is where this daemon serves pieces. Only its port is used: the tracker hands
    /// out the IP it sees the connection come from, unless its operator trusts announced
    /// addresses (`trust_announced_peer_addr`), in which case an unspecified IP (0.0.0.0) is
    /// still replaced by the connection's.
    /// `device_key` is the daemon's long-lived Ed25519 public key: the tracker binds this
    /// session's tickets to it and lists it with the session's shares so downloaders can pin
    /// the holder's TLS key.
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
        /// An `Arc` so a daemon announces the listing it holds without copying it (a
        /// 100,000-file tree's is ~10 MB); on the wire it is a plain `FileMeta`.
        meta: std::sync::Arc<FileMeta>,
        complete: bool,
    },
    StopShare {
        group: String,
        file: String,
    },
    /// The group owner removes a file entry and every member's share of it (a bogus or
    /// unwanted registration). Answers `Ok`; `Forbidden` for anyone but the owner.
    RemoveFile {
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
    /// The currently valid ticket-signing public keys (answered with `TicketKeys`): a seeder
    /// asks when a ticket names a key it does not know, and now and then to learn retirements.
    TicketKeys,
    /// Owner only: `user` stops being a member exactly as if they had left (their shares in the
    /// group are withdrawn).
    RemoveMember {
        group: String,
        user: String,
    },
    /// Turn this connection into an event stream (see [`Event`]): the tracker answers
    /// `Subscribed`, then pushes `Events` frames (an empty one as a keepalive) until the
    /// connection closes. `after` resumes after the last event id seen on a previous
    /// subscription; `None` replays every event still retained (the tracker keeps them at least
    /// as long as a ticket lives), then continues with new ones. Sent on a connection of its own:
    /// no other call is answered on it afterwards.
    Subscribe {
        after: Option<u64>,
    },
    /// Before login (no token): a fresh single-use nonce for a device login of `user` with
    /// `device_key`, answered with `DeviceChallenge`. Nothing is looked up or stored in the
    /// database for it (see `DeviceLogin`).
    DeviceChallenge {
        user: String,
        device_key: [u8; 32],
    },
    /// Before login (no token): log in as `user` without a password, proving possession of a
    /// device key registered for `user` by an earlier password login (a daemon restarting by
    /// itself). `signature` is the Ed25519 signature (64 bytes) of
    /// [`crate::device::login_message`] over the nonce of a `DeviceChallenge` answered by this
    /// same tracker. Answered like `Login` (`LoggedIn`); replaces every other session of this
    /// device. `device_name` renames the device if it changed in the daemon's config.
    DeviceLogin {
        user: String,
        device_key: [u8; 32],
        peer_addr: String,
        nonce: [u8; 32],
        signature: Vec<u8>,
        device_name: String,
    },
    /// Name (or rename) the caller's device (the one it logged in with); a name another device
    /// of the same user has gets a `-2`, `-3`, … suffix. Answered `Ok` with the name given.
    NameDevice {
        name: String,
    },
    /// The caller's devices (answered `Devices`).
    ListDevices,
    /// Revoke the caller's device named `name`: its sessions end at once and its device login
    /// is refused until a password login on it. Revoking one's own device logs it out.
    RevokeDevice {
        name: String,
    },
    /// End this session and every other session of the caller's device, and refuse the
    /// device's automatic login until the next password login (`minitorrctl logout`). A plain
    /// `Logout` (daemon shutdown) ends only the session and keeps the automatic login.
    LogoutDevice,
    /// An item's listing without piece hashes or a ticket (answered `Item`): for a tree, every
    /// file and empty directory. Members only, like `GetFile`; `NotFound` for an unknown item.
    ListItem {
        group: String,
        item: String,
    },
    /// Hole punching (issue #14): the caller cannot connect to the holder of `file` at `peer`
    /// (an address the tracker listed). The tracker checks that the caller is a member and that
    /// `peer` is an online holder of the file, then pushes `PunchRequest` to that holder, which
    /// connects to the caller's address from its peer port while the caller connects to `peer`
    /// from its own (TCP simultaneous open). Answered `Ok` once the request is on its way.
    /// `nonce` (random) names this attempt on the connection the holder opens.
    Punch {
        group: String,
        file: String,
        peer: String,
        nonce: [u8; 16],
    },
    /// A running download's refresh (answered `Holders`): the online holders and a fresh
    /// ticket, like `GetFile` but without the metadata the downloader already has (a big
    /// tree's listing is megabytes, re-sent and re-parsed every refresh otherwise). Members
    /// only; `NotFound` for an unknown item.
    GetHolders {
        group: String,
        file: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum Response {
    Ok {
        message: String,
    },
    LoggedIn(LoginGrant),
    Groups(Vec<GroupSummary>),
    Requests(Vec<String>),
    Files(Vec<FileSummary>),
    File(Box<FileDetails>),
    TicketKeys(Vec<TicketKey>),
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Answer to `Subscribe`: events with ids above `after` follow; those up to `head` had
    /// already happened when the subscription started (history: replayed so a seeder that just
    /// started still refuses tickets issued before a revocation), later ones are news.
    Subscribed {
        after: u64,
        head: u64,
    },
    /// Pushed on a subscription, in id order. Empty: a keepalive; the first empty one also
    /// means the history (events up to `head`) has been delivered.
    Events(Vec<Event>),
    /// Answer to `DeviceChallenge`: sign `nonce` (with `tracker_id`, see
    /// [`crate::device::login_message`]) and send `DeviceLogin` to the same tracker within
    /// `expires_in_secs`. A nonce opens at most one login attempt, right or wrong.
    DeviceChallenge {
        nonce: [u8; 32],
        tracker_id: [u8; 32],
        expires_in_secs: u32,
    },
    Devices(Vec<crate::types::DeviceInfo>),
    /// Answer to `ListItem`.
    Item(Box<crate::types::ItemListing>),
    /// Answer to `LeaveGroup`: whether ownership moved or the group was deleted.
    LeftGroup(crate::types::LeftGroup),
    /// Answer to `GetHolders`.
    Holders(Box<Holders>),
}

/// The answer to `GetHolders`: [`FileDetails`] without the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Holders {
    pub group: String,
    pub file: String,
    /// The item's SHA1 now (a downloader checks it is still the item it is fetching).
    pub sha1: crate::types::Sha1Hash,
    /// Online peers holding all or part of the file, excluding the asking session.
    pub peers: Vec<PeerInfo>,
    pub ticket: Ticket,
}

/// Something that happened to a group, pushed to the daemons of its members (at the time of the
/// event) over a `Subscribe` connection. Ids increase strictly in commit order across every
/// tracker sharing the database, so `after` is a complete resume point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Event {
    pub id: u64,
    /// Unix seconds (tracker clock) when it was committed: tickets issued at or before this
    /// are revoked by it.
    pub at_unix: u64,
    pub kind: EventKind,
}

/// New kinds go at the end (postcard encodes the variant index). Revocations first, then the
/// holder events (issue #11) that let downloaders of a file add and drop peers at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum EventKind {
    /// `user` is no longer a member of `group` (left, or removed by the owner): tickets naming
    /// them for this group must stop opening anything.
    MemberGone { group: String, user: String },
    /// `group` no longer exists.
    GroupDeleted { group: String },
    /// The entry `file` of `group` is gone (removed by the owner, or nobody shares it any more).
    FileRemoved { group: String, file: String },
    /// Events after the subscriber's `after` were pruned before it came back: it cannot know
    /// what it missed and must act as if everything was revoked (seeders close every peer
    /// connection; downloaders reconnect with fresh tickets).
    Resync,
    /// `peer` (one logged-in session of a member) now holds all or part of `file`: it shared
    /// it, started downloading it (announced with zero pieces), completed it, or logged in and
    /// re-shared it. Daemons downloading the file add it as a peer at once (issue #11).
    /// `peer.device_key` is the key the tracker recorded at that session's login: the
    /// downloader pins it exactly like a `GetFile` answer's.
    HolderOnline {
        group: String,
        file: String,
        peer: PeerInfo,
    },
    /// `user` stopped holding `file` (`stop_share`) — with `file: None`, every file of `group`
    /// (the session at `addr` logged out). `addr: None`: every session of `user`.
    /// Downloaders drop the matching peers (and stop reconnecting to them).
    HolderGone {
        group: String,
        file: Option<String>,
        user: String,
        addr: Option<String>,
    },
    /// Sent to the holder only (issue #14): the member `from` (its session's address as the
    /// tracker sees it, and device key) cannot connect to this holder's session at
    /// `holder_addr` for `file`; connect to `from.addr` from the peer port now, and open the
    /// connection with the punch preamble and `nonce` (see `Call::Punch`). A stale one (more
    /// than a few seconds old, or replayed history) is ignored.
    PunchRequest {
        group: String,
        file: String,
        holder_addr: String,
        from: PeerInfo,
        nonce: [u8; 16],
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LoginGrant {
    pub token: String,
    pub user: String,
    /// The ticket-signing public keys valid now (every tracker's current key, plus keys being
    /// retired after a rotation), to verify download tickets offline.
    pub tracker_keys: Vec<TicketKey>,
    /// How often the daemon must send `Heartbeat` to stay listed as online.
    pub heartbeat_secs: u32,
    /// This session's peer address as the tracker will hand it out.
    pub peer_addr: String,
    /// The relay this tracker offers (`relay_listen`), as `IP:PORT`; an unspecified IP
    /// (0.0.0.0) means "the address you reach this tracker at". `None`: no relay.
    pub relay: Option<String>,
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
    /// A per-member quota of the tracker (files, bytes or pieces registered; pieces per file)
    /// would be exceeded; the message says which and the limit.
    QuotaExceeded,
    Internal,
    /// The tracker cannot reach its database right now (down, unreachable, or locked for
    /// longer than the tracker waits); nothing was changed. Answered within about 2 s instead of
    /// hanging; the tracker reconnects by itself, so retrying later is right.
    DatabaseUnavailable,
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
