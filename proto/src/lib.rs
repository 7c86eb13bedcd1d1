//! The Minitorr wire protocol.
//!
//! Every message of every link is defined here, once:
//!
//! * [`control`] — `minitorrctl` ↔ `minitorrd` over the Unix control socket,
//! * [`tracker`] — `minitorrd` ↔ `trackerd` over TCP,
//! * [`peer`] — `minitorrd` ↔ `minitorrd` over TCP (piece exchange).
//!
//! All links use the same framing ([`codec::FrameCodec`]): a 4-byte big-endian length, then the
//! body. Bodies are postcard-encoded serde values, except piece data, which travels as raw bytes
//! after a tiny fixed header (see [`peer`]). Every connection starts with a [`handshake`] that
//! checks magic bytes, the link kind and the protocol version.

pub mod codec;
pub mod control;
pub mod defaults;
pub mod device;
pub mod error;
pub mod handshake;
pub mod item;
pub mod names;
pub mod peer;
pub mod private_dir;
pub mod ticket;
pub mod tracker;
pub mod tracker_info;
pub mod types;

#[cfg(test)]
mod proptests;

pub use codec::{FrameCodec, WireMessage};
pub use error::ProtoError;
pub use handshake::{handshake, HandshakeError, Link};

/// Version of the protocol spoken on all three links. Bump on any incompatible change.
/// 2: TLS peer links with device keys, tickets bound to them and naming their signing key,
/// revocation events, renewal, quotas, remove_member/remove_file (issue #10).
pub const PROTOCOL_VERSION: u16 = 2;

/// Largest frame accepted on the control and tracker links (a piece-hash list of a 100 GiB file
/// with 512 KiB pieces is 4 MiB, so this leaves room without letting a client make us buffer GBs).
pub const MAX_MESSAGE_FRAME: usize = 16 * 1024 * 1024;

/// Largest piece size a file may use; the peer link's frame cap is derived from it.
pub const MAX_PIECE_SIZE: u32 = 8 * 1024 * 1024;

/// Smallest piece size a file may use (keeps piece-hash lists of large files bounded).
pub const MIN_PIECE_SIZE: u32 = 16 * 1024;

/// Largest frame accepted on the peer link: one whole piece plus its header.
pub const MAX_PEER_FRAME: usize = MAX_PIECE_SIZE as usize + 1024;

/// Codec constructors for each end of each link, so every binary frames the same way.
pub mod links {
    use crate::codec::FrameCodec;
    use crate::{control, peer, tracker, MAX_MESSAGE_FRAME, MAX_PEER_FRAME};

    /// Used by minitorrctl: sends control requests, reads responses.
    pub fn control_client() -> FrameCodec<control::Response, control::Request> {
        FrameCodec::new(MAX_MESSAGE_FRAME)
    }
    /// Used by minitorrd's control socket.
    pub fn control_server() -> FrameCodec<control::Request, control::Response> {
        FrameCodec::new(MAX_MESSAGE_FRAME)
    }
    /// Used by minitorrd towards trackerd.
    pub fn tracker_client() -> FrameCodec<tracker::Response, tracker::Request> {
        FrameCodec::new(MAX_MESSAGE_FRAME)
    }
    /// Used by trackerd.
    pub fn tracker_server() -> FrameCodec<tracker::Request, tracker::Response> {
        FrameCodec::new(MAX_MESSAGE_FRAME)
    }
    /// Both ends of a peer connection.
    pub fn peer() -> FrameCodec<peer::PeerMsg, peer::PeerMsg> {
        FrameCodec::new(MAX_PEER_FRAME)
    }
}
