//! The daemon's use of the tracker's relay: the listener of a login, the dialer handed to
//! downloads, and what `status` says.

use super::Daemon;
use crate::peerlink::relay::{run_listener, RelayDialer};
use crate::peerlink::PeerLinkMode;
use crate::tracker::Session;

impl Daemon {
    /// Whether this login may use the relay, or why not (shown in `status` and in a
    /// download's peer errors when a holder is unreachable).
    pub(crate) fn relay_route(&self, session: &Session) -> Result<RelayDialer, String> {
        if !self.cfg.use_relay {
            return Err("relay not used (use_relay = false in this daemon's config)".into());
        }
        let Some(addr) = session.relay else {
            return Err("the tracker offers no relay (its relay_listen is off)".into());
        };
        if matches!(self.link, PeerLinkMode::InsecurePlaintext) && !addr.ip().is_loopback() {
            // Plaintext peer links are for loopback benchmarks; never through a remote relay.
            return Err(format!(
                "relay {addr} not used: plaintext peer links stay on loopback"
            ));
        }
        Ok(RelayDialer {
            addr,
            device: self.device_key.clone(),
        })
    }

    /// Keep a `Listen` connection at the relay for this login (stopped by `stop_activity`).
    pub(super) fn start_relay_listener(&self, session: &Session) {
        let task = match self.relay_route(session) {
            Ok(dialer) => {
                self.relay_status
                    .set(format!("connecting to {}", dialer.addr));
                let (inbox, status) = (self.relay_inbox.clone(), self.relay_status.clone());
                Some(tokio::spawn(run_listener(
                    dialer.addr,
                    dialer.device,
                    inbox,
                    status,
                )))
            }
            Err(why) => {
                self.relay_status.set(format!("off: {why}"));
                None
            }
        };
        if let Some(old) = std::mem::replace(&mut *self.relay_listener.lock().expect("lock"), task)
        {
            old.abort();
        }
    }

    pub(super) fn relay_status_line(&self, session: Option<&Session>) -> String {
        match session {
            None => "off (not logged in)".into(),
            Some(_) => self.relay_status.get(),
        }
    }
}
