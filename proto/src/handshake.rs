//! Connection preamble: both ends send `MAGIC`, the link kind and the protocol version, then
//! read the other side's. A mismatch is reported precisely so users see *what* is wrong
//! ("daemon speaks protocol 3, this minitorrctl speaks 2") instead of a decode error.

use std::fmt;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::PROTOCOL_VERSION;

pub const MAGIC: [u8; 6] = *b"MNTORR";
pub const PREAMBLE_LEN: usize = MAGIC.len() + 1 + 2;

/// Which of the three links a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Link {
    Control = 1,
    Tracker = 2,
    Peer = 3,
    /// A daemon's connection to a tracker's relay listener (`relay.rs`).
    Relay = 4,
    /// A hole-punched peer connection (issue #14), opened by the holder: the preamble is
    /// followed by the 16-byte nonce of the `Punch` it answers; then the downloader starts the
    /// peer link's TLS as on a direct connection. Only ever written, never negotiated.
    Punch = 5,
}

impl Link {
    fn from_u8(b: u8) -> Option<Link> {
        match b {
            1 => Some(Link::Control),
            2 => Some(Link::Tracker),
            3 => Some(Link::Peer),
            4 => Some(Link::Relay),
            5 => Some(Link::Punch),
            _ => None,
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Link::Control => "control",
            Link::Tracker => "tracker",
            Link::Peer => "peer",
            Link::Relay => "relay",
            Link::Punch => "punch",
        })
    }
}

#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("the other side is not speaking the Minitorr protocol")]
    NotMinitorr,
    #[error("the other side expected a {got} link, this is a {expected} link")]
    WrongLink { expected: Link, got: String },
    #[error("the other side speaks protocol {theirs}, we speak {ours}")]
    VersionMismatch { ours: u16, theirs: u16 },
    #[error("connection closed during handshake")]
    Closed,
    #[error("i/o error during handshake: {0}")]
    Io(std::io::Error),
}

pub fn preamble(link: Link, version: u16) -> [u8; PREAMBLE_LEN] {
    let mut p = [0u8; PREAMBLE_LEN];
    p[..MAGIC.len()].copy_from_slice(&MAGIC);
    p[MAGIC.len()] = link as u8;
    p[MAGIC.len() + 1..].copy_from_slice(&version.to_be_bytes());
    p
}

/// Check a received preamble against what this side expects.
pub fn check_preamble(p: &[u8; PREAMBLE_LEN], link: Link, ours: u16) -> Result<(), HandshakeError> {
    if p[..MAGIC.len()] != MAGIC {
        return Err(HandshakeError::NotMinitorr);
    }
    let got = p[MAGIC.len()];
    if got != link as u8 {
        let got = Link::from_u8(got).map_or_else(|| format!("unknown ({got})"), |l| l.to_string());
        return Err(HandshakeError::WrongLink {
            expected: link,
            got,
        });
    }
    let theirs = u16::from_be_bytes([p[MAGIC.len() + 1], p[MAGIC.len() + 2]]);
    if theirs != ours {
        return Err(HandshakeError::VersionMismatch { ours, theirs });
    }
    Ok(())
}

/// Run the preamble exchange on a fresh connection. Callers wrap it in a timeout.
pub async fn handshake<S>(io: &mut S, link: Link) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    handshake_with_version(io, link, PROTOCOL_VERSION).await
}

/// Like [`handshake`] with an explicit version (tests use it to simulate old/new peers).
pub async fn handshake_with_version<S>(
    io: &mut S,
    link: Link,
    version: u16,
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(&preamble(link, version))
        .await
        .map_err(HandshakeError::Io)?;
    io.flush().await.map_err(HandshakeError::Io)?;
    let mut theirs = [0u8; PREAMBLE_LEN];
    match io.read_exact(&mut theirs).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(HandshakeError::Closed)
        }
        Err(e) => return Err(HandshakeError::Io(e)),
    }
    check_preamble(&theirs, link, version)
}

/// The bytes a holder writes first on a hole-punched connection: the `Punch` preamble, then
/// the attempt's nonce.
pub fn punch_preamble(nonce: &[u8; 16]) -> [u8; PREAMBLE_LEN + 16] {
    let mut p = [0u8; PREAMBLE_LEN + 16];
    p[..PREAMBLE_LEN].copy_from_slice(&preamble(Link::Punch, PROTOCOL_VERSION));
    p[PREAMBLE_LEN..].copy_from_slice(nonce);
    p
}

/// The nonce of a punch preamble, or what is wrong with it.
pub fn parse_punch_preamble(p: &[u8; PREAMBLE_LEN + 16]) -> Result<[u8; 16], HandshakeError> {
    let head: &[u8; PREAMBLE_LEN] = p[..PREAMBLE_LEN].try_into().expect("length");
    check_preamble(head, Link::Punch, PROTOCOL_VERSION)?;
    Ok(p[PREAMBLE_LEN..].try_into().expect("length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn matching_sides_agree() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let (ra, rb) = tokio::join!(handshake(&mut a, Link::Peer), handshake(&mut b, Link::Peer));
        ra.unwrap();
        rb.unwrap();
    }

    #[tokio::test]
    async fn version_mismatch_names_both_versions() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let (ra, _) = tokio::join!(
            handshake_with_version(&mut a, Link::Control, 2),
            handshake_with_version(&mut b, Link::Control, 3)
        );
        match ra.unwrap_err() {
            HandshakeError::VersionMismatch { ours: 2, theirs: 3 } => {}
            e => panic!("unexpected {e:?}"),
        }
    }

    #[tokio::test]
    async fn wrong_link_and_garbage_are_rejected() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let (ra, _) = tokio::join!(
            handshake(&mut a, Link::Tracker),
            handshake(&mut b, Link::Peer)
        );
        assert!(matches!(ra, Err(HandshakeError::WrongLink { .. })));

        let (mut a, mut b) = tokio::io::duplex(64);
        let garbage = async {
            b.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        };
        let (ra, _) = tokio::join!(handshake(&mut a, Link::Tracker), garbage);
        assert!(matches!(ra, Err(HandshakeError::NotMinitorr)));
    }
}
