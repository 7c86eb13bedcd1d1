//! The relay link: `minitorrd` ↔ `trackerd`'s relay listener (issue #14, last resort).
//!
//! Two daemons that cannot reach each other directly meet at the relay, which then splices
//! their two TCP streams byte for byte. The peer link's TLS session (device keys pinned at
//! both ends) runs *through* the splice, end to end: the relay sees only ciphertext and cannot
//! read or alter a byte without the TLS record check failing.
//!
//! A relay connection is: the usual preamble ([`crate::Link::Relay`]), then the relay sends
//! [`RelayMsg::Challenge`] with a fresh nonce, the daemon answers one [`RelayHello`] signed by
//! its device key over [`auth_message`] (the nonce, its key and the operation), and the relay
//! admits it only if that key has a live session on the tracker. Then, by operation:
//!
//! * [`RelayOp::Listen`] (a holder): the connection stays open as a control channel; the relay
//!   pushes [`RelayMsg::Incoming`] for each downloader that wants this holder, and
//!   [`RelayMsg::Ping`] as a keepalive.
//! * [`RelayOp::Connect`] (a downloader): "join me to the holder with this device key". The
//!   relay checks that both users share a group, tells the holder, and when the holder's
//!   `Accept` arrives answers [`RelayMsg::Joined`] on both connections.
//! * [`RelayOp::Accept`] (the holder, on a new connection): the other end of a circuit it was
//!   told about; only the device key the circuit names may accept it.
//!
//! After `Joined` the connection carries the spliced bytes and nothing else. Frames here are
//! read with [`read_frame`], which never reads past the frame's end, so the first bytes of the
//! other side (a TLS ClientHello) are not swallowed by a buffer.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::ProtoError;

/// Largest relay frame (a hello, a refusal message): tiny, checked before reading the body.
pub const MAX_RELAY_FRAME: usize = 4096;

/// Context of a relay-auth signature; no other signature of ours starts with it.
pub const RELAY_AUTH_CONTEXT: &[u8] = b"minitorr-relay-auth-v1";

/// Circuit ids are random and single-use.
pub type CircuitId = [u8; 16];

/// Relay → daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum RelayMsg {
    /// First frame of every connection: sign this (see [`auth_message`]).
    Challenge { nonce: [u8; 32] },
    /// `Listen` accepted: this connection now receives `Incoming` and `Ping`.
    Listening,
    /// A downloader (`from_user`, device key `from_key`) wants a circuit to this holder: open
    /// a new relay connection with `Accept { circuit }`.
    Incoming {
        circuit: CircuitId,
        from_user: String,
        from_key: [u8; 32],
    },
    /// Both ends are there: every byte after this frame is the other daemon's.
    Joined,
    /// The relay said no; the connection closes.
    Refused {
        reason: RelayRefusal,
        message: String,
    },
    /// Keepalive on `Listen` connections.
    Ping,
}

/// Why the relay refused, for the daemon's decisions (retry later or not) and its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum RelayRefusal {
    /// Bad signature, or the device key has no live session on the tracker.
    NotAuthenticated,
    /// The two users share no group (or the holder's session is gone).
    Forbidden,
    /// The holder is not connected to the relay (not listening).
    HolderNotListening,
    /// The holder did not accept the circuit in time.
    HolderDidNotAnswer,
    /// The circuit is unknown, expired, or not addressed to this device key.
    NoSuchCircuit,
    /// A per-user or total limit of the relay is reached: try later.
    Busy,
    /// A malformed or unexpected frame.
    BadRequest,
}

/// Daemon → relay: the one frame a daemon sends, right after the challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RelayHello {
    pub device_key: [u8; 32],
    /// Ed25519 signature (64 bytes) of [`auth_message`] with `device_key`.
    pub signature: Vec<u8>,
    pub op: RelayOp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum RelayOp {
    Listen,
    Connect { holder_key: [u8; 32] },
    Accept { circuit: CircuitId },
}

/// The bytes a daemon signs: context, NUL, the relay's nonce, its device key, then the
/// operation (postcard). Binding the operation means a signature seen on the wire can serve
/// no other request, and the nonce (single-use, per connection) that it cannot be replayed.
pub fn auth_message(nonce: &[u8; 32], device_key: &[u8; 32], op: &RelayOp) -> Vec<u8> {
    let mut m = Vec::with_capacity(RELAY_AUTH_CONTEXT.len() + 1 + 64 + 40);
    m.extend_from_slice(RELAY_AUTH_CONTEXT);
    m.push(0);
    m.extend_from_slice(nonce);
    m.extend_from_slice(device_key);
    m.extend_from_slice(&postcard::to_allocvec(op).expect("an op always encodes"));
    m
}

/// Write one frame: 4-byte big-endian length, postcard body.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), ProtoError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let buf = encode_frame(msg)?;
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Read exactly one frame (never more bytes than it has), refusing one over
/// [`MAX_RELAY_FRAME`] before reading its body.
pub async fn read_frame<R, T>(r: &mut R) -> Result<T, ProtoError>
where
    R: AsyncRead + Unpin,
    T: serde::de::DeserializeOwned,
{
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.map_err(eof_is_truncated)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_RELAY_FRAME {
        return Err(ProtoError::FrameTooLarge {
            len,
            max: MAX_RELAY_FRAME,
        });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(eof_is_truncated)?;
    crate::codec::decode_postcard(&body)
}

/// The synchronous twin of [`read_frame`] (fuzzing, tests): the first frame of `bytes` and the
/// bytes it used, `Ok(None)` if `bytes` holds less than a whole frame. Same checks: the length
/// is refused over [`MAX_RELAY_FRAME`] before the body is looked at.
pub fn parse_frame<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<Option<(T, usize)>, ProtoError> {
    let Some(len) = bytes.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    if len > MAX_RELAY_FRAME {
        return Err(ProtoError::FrameTooLarge {
            len,
            max: MAX_RELAY_FRAME,
        });
    }
    match bytes.get(4..4 + len) {
        None => Ok(None),
        Some(body) => Ok(Some((crate::codec::decode_postcard(body)?, 4 + len))),
    }
}

/// Encode one frame into bytes (what [`write_frame`] sends).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    let body = postcard::to_allocvec(msg).map_err(|e| ProtoError::Encode(e.to_string()))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    Ok(buf)
}

fn eof_is_truncated(e: std::io::Error) -> ProtoError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ProtoError::Truncated { have: 0 }
    } else {
        ProtoError::Io(e)
    }
}

impl std::fmt::Display for RelayRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RelayRefusal::NotAuthenticated => "not authenticated",
            RelayRefusal::Forbidden => "forbidden",
            RelayRefusal::HolderNotListening => "holder not connected to the relay",
            RelayRefusal::HolderDidNotAnswer => "holder did not answer",
            RelayRefusal::NoSuchCircuit => "no such circuit",
            RelayRefusal::Busy => "relay busy",
            RelayRefusal::BadRequest => "bad request",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_changes_the_signed_message() {
        let base = auth_message(&[1; 32], &[2; 32], &RelayOp::Listen);
        assert!(base.starts_with(b"minitorr-relay-auth-v1\0"));
        for other in [
            auth_message(&[9; 32], &[2; 32], &RelayOp::Listen),
            auth_message(&[1; 32], &[9; 32], &RelayOp::Listen),
            auth_message(
                &[1; 32],
                &[2; 32],
                &RelayOp::Connect {
                    holder_key: [0; 32],
                },
            ),
            auth_message(&[1; 32], &[2; 32], &RelayOp::Accept { circuit: [0; 16] }),
        ] {
            assert_ne!(base, other);
        }
    }

    #[tokio::test]
    async fn a_frame_is_read_without_the_bytes_after_it() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, &RelayMsg::Joined).await.unwrap();
        a.write_all(b"\x16TLS").await.unwrap();
        let m: RelayMsg = read_frame(&mut b).await.unwrap();
        assert_eq!(m, RelayMsg::Joined);
        let mut rest = [0u8; 4];
        b.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"\x16TLS");
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_its_body() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&(1_000_000u32).to_be_bytes()).await.unwrap();
        let e = read_frame::<_, RelayMsg>(&mut b).await.unwrap_err();
        assert!(matches!(e, ProtoError::FrameTooLarge { .. }), "{e:?}");
    }

    proptest::proptest! {
        #[test]
        fn relay_messages_round_trip(m: RelayMsg, h: RelayHello) {
            futures::executor::block_on(async {
                let mut wire: Vec<u8> = Vec::new();
                write_frame(&mut wire, &m).await.unwrap();
                write_frame(&mut wire, &h).await.unwrap();
                let mut r: &[u8] = &wire;
                assert_eq!(read_frame::<_, RelayMsg>(&mut r).await.unwrap(), m);
                assert_eq!(read_frame::<_, RelayHello>(&mut r).await.unwrap(), h);
                assert!(r.is_empty());
            });
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_reader(bytes: Vec<u8>) {
            futures::executor::block_on(async {
                let mut r: &[u8] = &bytes;
                let _ = read_frame::<_, RelayMsg>(&mut r).await;
                let mut r: &[u8] = &bytes;
                let _ = read_frame::<_, RelayHello>(&mut r).await;
            });
        }
    }
}
