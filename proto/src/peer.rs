//! `minitorrd` ↔ `minitorrd`: piece exchange for one file per connection.
//!
//! Flow: the downloader connects and sends `Hello` with its tracker-signed ticket (which names
//! group, file name and whole-file SHA1 — never a path). The seeder answers `Welcome` with its
//! bitfield, or `Refused`. Then the downloader pipelines `Request`s; the seeder answers each with
//! `Piece` (or `NoPiece`), and sends `Have` as it verifies new pieces itself (partial seeders).
//!
//! Frame body: tag byte. Tag [`TAG_MSG`] is followed by a postcard-encoded [`PeerMsg`]; tag
//! [`TAG_PIECE`] is followed by a big-endian `u32` piece index and then the raw piece bytes,
//! which the decoder hands out as a zero-copy slice of the read buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::codec::{decode_postcard, encode_postcard, WireMessage};
use crate::ticket::Ticket;
use crate::types::Bitfield;
use crate::ProtoError;

/// Request counts in the peer protocol are stated for pieces of this size; an item with smaller
/// pieces allows proportionally more requests (the same bytes), so its piece size does not
/// limit how fast a long link can go.
pub const REFERENCE_PIECE_SIZE: u32 = 512 * 1024;

/// How many requests for pieces of `piece_size` weigh as much as one of
/// [`REFERENCE_PIECE_SIZE`] (at least 1).
pub fn requests_per_reference(piece_size: u32) -> usize {
    (REFERENCE_PIECE_SIZE / piece_size.max(1)).max(1) as usize
}

/// Requests a downloader may have queued at one seeder: 64 reference pieces' worth (32 MiB;
/// 512 requests of 64 KiB). A seeder closes a connection that queues more.
pub fn max_queued_requests(piece_size: u32) -> usize {
    64 * requests_per_reference(piece_size)
}

pub const TAG_MSG: u8 = 0;
pub const TAG_PIECE: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum PeerMsg {
    Hello {
        ticket: Ticket,
    },
    Welcome {
        have: Bitfield,
    },
    Refused {
        reason: String,
    },
    /// The sender has verified `piece` since its last bitfield.
    Have {
        piece: u32,
    },
    Request {
        piece: u32,
    },
    /// The downloader no longer needs `piece` (endgame: another peer delivered it).
    Cancel {
        piece: u32,
    },
    /// The sender does not have `piece` (or stopped sharing the file).
    NoPiece {
        piece: u32,
    },
    /// Downloader → seeder on an open connection: a fresh ticket for the same user, group, file
    /// and content, to push back the connection's expiry. The seeder checks it like `Hello`'s
    /// and compares every claim except the expiry; anything else is ignored (the connection
    /// then closes when the old ticket expires).
    Renew {
        ticket: Ticket,
    },
    /// Seeder → downloader, instead of `Piece` or unasked: "take this piece from another
    /// downloader, it is already in the swarm" (initial seeding, `minitorrd/src/sharing/
    /// upload_policy.rs`). The downloader releases the request, if any, and does not ask this
    /// seeder for it for `REASK_AFTER` (3 s); asked again after that, the seeder serves it.
    /// (`Have` also goes downloader → seeder: the pieces the downloader verified, from anyone.)
    Elsewhere {
        piece: u32,
    },
    /// Piece data. Never postcard-encoded: see the module docs.
    #[serde(skip)]
    Piece {
        piece: u32,
        #[cfg_attr(
            test,
            proptest(
                strategy = "proptest::collection::vec(proptest::num::u8::ANY, 0..300).prop_map(Bytes::from)"
            )
        )]
        data: Bytes,
    },
}

impl WireMessage for PeerMsg {
    fn encode_body(&self, dst: &mut BytesMut) -> Result<(), ProtoError> {
        match self {
            PeerMsg::Piece { piece, data } => {
                dst.reserve(5 + data.len());
                dst.put_u8(TAG_PIECE);
                dst.put_u32(*piece);
                dst.extend_from_slice(data);
                Ok(())
            }
            other => {
                dst.put_u8(TAG_MSG);
                encode_postcard(other, dst)
            }
        }
    }

    fn decode_body(mut body: Bytes) -> Result<Self, ProtoError> {
        match body.first().copied() {
            Some(TAG_MSG) => decode_postcard(&body[1..]),
            Some(TAG_PIECE) if body.len() >= 5 => {
                body.advance(1);
                let piece = body.get_u32();
                Ok(PeerMsg::Piece { piece, data: body })
            }
            Some(TAG_PIECE) => Err(ProtoError::Malformed(
                "piece frame shorter than its header".into(),
            )),
            Some(t) => Err(ProtoError::Malformed(format!("unknown peer frame tag {t}"))),
            None => Err(ProtoError::Malformed("empty peer frame".into())),
        }
    }
}

#[cfg(test)]
use proptest::strategy::Strategy as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_queue_holds_the_same_bytes_whatever_the_piece_size() {
        const KIB: u32 = 1024;
        assert_eq!(max_queued_requests(512 * KIB), 64);
        assert_eq!(max_queued_requests(8 * 1024 * KIB), 64);
        assert_eq!(max_queued_requests(64 * KIB), 512);
        assert_eq!(max_queued_requests(crate::MIN_PIECE_SIZE), 2048);
        assert_eq!(requests_per_reference(0), 512 * 1024);
        for ps in [16 * KIB, 64 * KIB, 256 * KIB, 512 * KIB] {
            assert_eq!(max_queued_requests(ps) * ps as usize, 32 << 20);
        }
    }
}
