//! The daemon's side of the tracker's relay (proto/src/relay.rs): the last resort when a
//! holder cannot be reached directly.
//!
//! * A logged-in daemon keeps one `Listen` connection to the relay ([`run_listener`]); for
//!   each `Incoming` notice it opens a new connection with `Accept`, and once the relay says
//!   `Joined` hands the TCP stream to the peer server exactly like an accepted connection.
//! * A downloader whose direct connect failed calls [`RelayDialer::dial`]: a connection with
//!   `Connect { holder_key }` that becomes, after `Joined`, a byte pipe to the holder.
//!
//! Either way the stream is a plain `TcpStream` to the relay, and the peer link's TLS (device
//! keys pinned) runs over it unchanged: the relay only ever sees ciphertext.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use minitorr_proto::relay::{
    auth_message, read_frame, write_frame, RelayHello, RelayMsg, RelayOp, RelayRefusal,
};
use minitorr_proto::{handshake, Link};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::DeviceKey;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer than the relay's wait for the holder (10 s), so its answer arrives first.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
/// The relay pings every 20 s: nothing for this long means the connection is dead.
const LISTEN_SILENCE: Duration = Duration::from_secs(65);
const RECONNECT_MIN: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Why a relay connection failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("relay {addr} unreachable: {source}")]
    Unreachable {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("relay timed out")]
    Timeout,
    #[error("relay refused ({reason}): {message}")]
    Refused {
        reason: RelayRefusal,
        message: String,
    },
    #[error("relay protocol error: {0}")]
    Proto(String),
}

impl From<minitorr_proto::ProtoError> for RelayError {
    fn from(e: minitorr_proto::ProtoError) -> Self {
        RelayError::Proto(e.to_string())
    }
}

impl From<minitorr_proto::HandshakeError> for RelayError {
    fn from(e: minitorr_proto::HandshakeError) -> Self {
        RelayError::Proto(e.to_string())
    }
}

/// Connect to the relay, answer its challenge with `op` signed by our device key.
async fn hello(addr: SocketAddr, device: &DeviceKey, op: RelayOp) -> Result<TcpStream, RelayError> {
    let mut s = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(RelayError::Unreachable { addr, source }),
        Err(_) => return Err(RelayError::Timeout),
    };
    s.set_nodelay(true).ok();
    let exchange = async {
        handshake(&mut s, Link::Relay).await?;
        let nonce = match read_frame(&mut s).await? {
            RelayMsg::Challenge { nonce } => nonce,
            other => {
                return Err(RelayError::Proto(format!(
                    "expected a challenge, got {other:?}"
                )))
            }
        };
        let device_key = device.public_bytes();
        let signature = device
            .sign(&auth_message(&nonce, &device_key, &op))
            .to_vec();
        write_frame(
            &mut s,
            &RelayHello {
                device_key,
                signature,
                op,
            },
        )
        .await?;
        Ok(())
    };
    tokio::time::timeout(CONNECT_TIMEOUT, exchange)
        .await
        .map_err(|_| RelayError::Timeout)??;
    Ok(s)
}

/// Wait for `Joined` (the stream is then the other daemon's), or the refusal.
async fn joined(mut s: TcpStream) -> Result<TcpStream, RelayError> {
    match tokio::time::timeout(JOIN_TIMEOUT, read_frame(&mut s))
        .await
        .map_err(|_| RelayError::Timeout)??
    {
        RelayMsg::Joined => Ok(s),
        RelayMsg::Refused { reason, message } => Err(RelayError::Refused { reason, message }),
        other => Err(RelayError::Proto(format!("expected Joined, got {other:?}"))),
    }
}

/// Goes through the relay to holders (one per download environment).
#[derive(Clone)]
pub struct RelayDialer {
    pub addr: SocketAddr,
    pub device: DeviceKey,
}

impl std::fmt::Debug for RelayDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelayDialer({})", self.addr)
    }
}

impl RelayDialer {
    /// A stream to the holder with `holder_key`, spliced by the relay.
    pub async fn dial(&self, holder_key: [u8; 32]) -> Result<TcpStream, RelayError> {
        let s = hello(self.addr, &self.device, RelayOp::Connect { holder_key }).await?;
        joined(s).await
    }
}

/// A relayed connection for the peer server: the stream and the relay's address (what the
/// server sees as the peer's address).
pub type RelayedConn = (TcpStream, SocketAddr);

/// What `status` says about the relay.
#[derive(Default)]
pub struct RelayStatus(Mutex<String>);

impl RelayStatus {
    pub fn set(&self, s: impl Into<String>) {
        *self.0.lock().expect("lock") = s.into();
    }
    pub fn get(&self) -> String {
        self.0.lock().expect("lock").clone()
    }
}

/// Keep a `Listen` connection to the relay until aborted, reconnecting with backoff, and hand
/// every circuit the relay joins to `inbox` (the peer server).
pub async fn run_listener(
    addr: SocketAddr,
    device: DeviceKey,
    inbox: mpsc::Sender<RelayedConn>,
    status: Arc<RelayStatus>,
) {
    let mut backoff = RECONNECT_MIN;
    loop {
        match listen_once(addr, &device, &inbox, &status).await {
            Ok(()) => backoff = RECONNECT_MIN,
            Err(e) => {
                tracing::warn!(relay = %addr, error = %e, "relay listener connection failed");
                status.set(format!("reconnecting to {addr} ({e})"));
            }
        }
        if inbox.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

async fn listen_once(
    addr: SocketAddr,
    device: &DeviceKey,
    inbox: &mpsc::Sender<RelayedConn>,
    status: &RelayStatus,
) -> Result<(), RelayError> {
    let mut s = hello(addr, device, RelayOp::Listen).await?;
    match tokio::time::timeout(JOIN_TIMEOUT, read_frame(&mut s))
        .await
        .map_err(|_| RelayError::Timeout)??
    {
        RelayMsg::Listening => {}
        RelayMsg::Refused { reason, message } => {
            return Err(RelayError::Refused { reason, message })
        }
        other => {
            return Err(RelayError::Proto(format!(
                "expected Listening, got {other:?}"
            )))
        }
    }
    tracing::info!(relay = %addr, "listening at the relay for relayed peer connections");
    status.set(format!("listening at {addr}"));
    loop {
        let msg = tokio::time::timeout(LISTEN_SILENCE, read_frame(&mut s))
            .await
            .map_err(|_| RelayError::Timeout)??;
        match msg {
            RelayMsg::Ping => {}
            RelayMsg::Incoming {
                circuit, from_user, ..
            } => {
                tracing::debug!(relay = %addr, %from_user, "relayed connection requested");
                let (device, inbox) = (device.clone(), inbox.clone());
                tokio::spawn(async move {
                    let accepted = async {
                        let s = hello(addr, &device, RelayOp::Accept { circuit }).await?;
                        joined(s).await
                    };
                    match accepted.await {
                        Ok(stream) => {
                            let _ = inbox.send((stream, addr)).await;
                        }
                        Err(e) => {
                            tracing::info!(relay = %addr, %from_user, error = %e, "cannot take a relayed connection")
                        }
                    }
                });
            }
            other => return Err(RelayError::Proto(format!("unexpected {other:?}"))),
        }
    }
}

/// The relay address a login grant names, with an unspecified IP (0.0.0.0, ::) replaced by
/// the IP we reach the tracker at.
pub fn resolve_relay_addr(granted: &str, tracker: SocketAddr) -> Option<SocketAddr> {
    let mut a: SocketAddr = granted.parse().ok()?;
    if a.ip().is_unspecified() {
        a.set_ip(tracker.ip());
    }
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_relay_ip_means_the_trackers() {
        let t: SocketAddr = "192.0.2.5:5000".parse().unwrap();
        assert_eq!(
            resolve_relay_addr("0.0.0.0:5001", t),
            Some("192.0.2.5:5001".parse().unwrap())
        );
        assert_eq!(
            resolve_relay_addr("198.51.100.1:6000", t),
            Some("198.51.100.1:6000".parse().unwrap())
        );
        assert_eq!(resolve_relay_addr("nonsense", t), None);
    }
}
