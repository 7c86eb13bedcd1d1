//! The transport of peer links: the device key, TLS on top of TCP, and the stream abstraction
//! the piece protocol runs over.
//!
//! The piece protocol (sharing/server.rs, download/peer.rs) is generic over [`PeerStream`], any
//! `AsyncRead + AsyncWrite` byte stream: TCP, TLS over TCP — also when the TCP stream goes
//! through the tracker's relay (relay.rs), which hands out a plain `TcpStream`. A stream may
//! offer a faster way to send piece bytes ([`PieceWrite::sendfile_socket`]): plain TCP sends
//! them with sendfile(2) from the page cache; TLS must encrypt them, so they are read into a
//! buffer and written through the TLS stream.

pub mod identity;
pub mod relay;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub use identity::{DeviceKey, DeviceKeyError};
pub use tls::PeerTls;

/// The refusal a TLS seeder sends to a plaintext client (and what tests look for).
pub const PLAINTEXT_REFUSED: &str =
    "this peer only accepts encrypted (TLS) peer links; plaintext connection refused";

/// How this daemon's peer links run.
#[derive(Clone, Debug)]
pub enum PeerLinkMode {
    /// TLS 1.3, both sides authenticated by their device keys. The only production mode.
    Tls(Arc<PeerTls>),
    /// Plain TCP, for benchmarks on loopback only (`insecure_plaintext_peer_links_for_benchmarks`;
    /// the daemon refuses to start with it on any other address). Tickets still bind the
    /// device key, but nothing proves it: anyone who can read the link can replay a ticket.
    InsecurePlaintext,
}

impl PeerLinkMode {
    pub fn is_tls(&self) -> bool {
        matches!(self, PeerLinkMode::Tls(_))
    }
}

/// The plaintext benchmark mode may only serve on loopback: anything else is refused.
pub fn check_plaintext_allowed(listen: SocketAddr) -> Result<(), String> {
    if listen.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "insecure_plaintext_peer_links_for_benchmarks is set but the peer listen address \
             {listen} is not loopback: plaintext peer links would send file bytes and tickets \
             in clear over the network; refusing to start"
        ))
    }
}

/// A byte stream a peer link can run over.
pub trait PeerStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: PieceWrite;
    /// Halves for a reader and a writer running at the same time.
    fn into_halves(self) -> (Self::Read, Self::Write);
    /// The TCP socket underneath, to read its kernel send queue (the seeder's fair split,
    /// sharing/fair_share.rs). `None` if there is none.
    fn tcp_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

/// The writing half of a peer stream.
pub trait PieceWrite: AsyncWrite + Unpin + Send + 'static {
    /// The raw socket, if piece bytes may go to it straight from the page cache (sendfile).
    /// Only a stream that adds nothing to the bytes (plain TCP) may return one.
    fn sendfile_socket(&self) -> Option<&TcpStream> {
        None
    }
}

impl PeerStream for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;
    fn into_halves(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
    fn tcp_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(self))
    }
}

impl PieceWrite for OwnedWriteHalf {
    fn sendfile_socket(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl PeerStream for tls::TlsStream {
    type Read = ReadHalf<tls::TlsStream>;
    type Write = WriteHalf<tls::TlsStream>;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
    fn tcp_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(self))
    }
}

impl PieceWrite for WriteHalf<tls::TlsStream> {}

/// The smallest round trip TCP measured on `sock` (`tcpi_min_rtt`): the path's, with no
/// application queue in it (a busy seeder makes our requests wait, TCP's samples do not).
/// `None` if the kernel has no sample yet or cannot say.
pub fn tcp_min_rtt(sock: &std::os::fd::OwnedFd) -> Option<std::time::Duration> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero tcp_info is valid (plain integers).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info` and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    let filled = std::mem::offset_of!(libc::tcp_info, tcpi_min_rtt) + std::mem::size_of::<u32>();
    if r != 0 || (len as usize) < filled || info.tcpi_min_rtt == 0 || info.tcpi_min_rtt == u32::MAX
    {
        return None;
    }
    Some(std::time::Duration::from_micros(u64::from(
        info.tcpi_min_rtt,
    )))
}

#[cfg(test)]
mod rtt_tests {
    #[tokio::test]
    async fn tcp_reports_the_path_round_trip_of_a_connected_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        // A request and its answer: TCP has acknowledged data to measure with.
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        let sock = std::os::fd::AsFd::as_fd(&client)
            .try_clone_to_owned()
            .unwrap();
        let rtt = super::tcp_min_rtt(&sock).expect("loopback TCP has a round-trip sample");
        assert!(rtt < std::time::Duration::from_millis(100), "{rtt:?}");
    }
}
