//! The holder's side of a hole punch (issue #14): the tracker pushed `PunchRequest` because a
//! member cannot connect to us; connect to it from our peer port now, and serve what comes
//! of it exactly like an accepted connection (TLS, ticket bound to the member's key).

use std::net::SocketAddr;
use std::sync::Arc;

use minitorr_proto::types::PeerInfo;

use super::Daemon;
use crate::punch;

/// A request older than this (tracker clock vs ours, generously) is history, not a punch.
const STALE_SECS: u64 = 30;

impl Daemon {
    pub(super) fn answer_punch(
        self: &Arc<Self>,
        group: &str,
        file: &str,
        holder_addr: &str,
        from: &PeerInfo,
        nonce: [u8; 16],
        at_unix: u64,
    ) {
        // Addressed to this session (another device of ours gets the same event)?
        let ours = self
            .session
            .read()
            .expect("lock")
            .as_ref()
            .is_some_and(|s| s.peer_addr == holder_addr);
        if !ours || !self.cfg.hole_punching || self.shares.get(group, file).is_none() {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if now > at_unix + STALE_SECS {
            tracing::debug!(%group, %file, from = %from.addr, "stale punch request ignored");
            return;
        }
        let Ok(remote) = from.addr.parse::<SocketAddr>() else {
            return;
        };
        let Ok(permit) = self.punch.holder_slots.clone().try_acquire_owned() else {
            tracing::warn!(from = %from.addr, user = %from.user, "too many hole punches at once; ignored one");
            return;
        };
        let (hub, local) = (self.punch.clone(), self.peer_addr);
        let user = from.user.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match punch::simultaneous_open(local, remote, punch::PUNCH_WINDOW).await {
                Ok(mut stream) => {
                    if let Err(e) = punch::send_preamble(&mut stream, &nonce).await {
                        tracing::debug!(%remote, error = %e, "punched connection lost");
                        return;
                    }
                    tracing::debug!(%remote, %user, "hole punched; serving it");
                    let _ = hub.incoming.send((stream, remote)).await;
                }
                Err(e) => tracing::debug!(%remote, %user, error = %e, "hole punch failed"),
            }
        });
    }
}
