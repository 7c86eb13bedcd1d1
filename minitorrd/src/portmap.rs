//! Port mapping (issue #14): when the peer listen address is private, ask the LAN's gateway
//! (UPnP-IGD, through the `igd-next` crate) to forward the same port on its public address to
//! us, renew the lease before it runs out, and delete the mapping on a clean shutdown.
//!
//! It runs as a background task: startup and login never wait for it. The tracker hands out the
//! IP it sees our connections come from (the router's public IP) with our announced port, so a
//! mapping of the *same* external port needs no announcement at all; the daemon announces the
//! mapped address at its next login when the gateway gave a different port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use igd_next::aio::tokio::{search_gateway, Tokio};
use igd_next::aio::Gateway;
use igd_next::{AddAnyPortError, AddPortError, PortMappingProtocol, SearchOptions};
use minitorr_proto::control::{PortMappingState, PortMappingStatus};
use tokio_util::sync::CancellationToken;

/// How long one gateway search waits for SSDP answers.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait before trying again after no gateway answered or it refused.
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// How long deleting the mapping may hold up shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
const DESCRIPTION: &str = "minitorr peer port";

/// Is `ip` an address a router would NAT (RFC 1918, CGNAT 100.64/10), or unspecified (we listen
/// on every interface and may well be behind one)? Loopback, link-local and public addresses
/// need no mapping.
pub fn needs_mapping(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_unspecified()
                || v4.is_private()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        // IPv6 hosts have global addresses; a firewall pinhole (IGDv2) is a later step.
        IpAddr::V6(_) => false,
    }
}

/// When to renew a lease of `lease_secs` (0 = permanent: check again hourly, in case the router
/// rebooted and forgot it): halfway, never sooner than 15 s.
pub fn renew_after(lease_secs: u32) -> Duration {
    if lease_secs == 0 {
        return Duration::from_secs(3600);
    }
    Duration::from_secs(u64::from(lease_secs / 2).max(15))
}

/// The mapping as it stands, shared with `status` and with login (which announces it).
pub struct PortMapper {
    status: Mutex<PortMappingStatus>,
    /// Set while mapped: what to delete at shutdown.
    active: tokio::sync::Mutex<Option<(Gateway<Tokio>, u16)>>,
}

impl PortMapper {
    fn new(state: PortMappingState, detail: Option<String>) -> Arc<PortMapper> {
        Arc::new(PortMapper {
            status: Mutex::new(PortMappingStatus {
                state,
                detail,
                ..Default::default()
            }),
            active: tokio::sync::Mutex::new(None),
        })
    }

    /// Start mapping `listen`'s port in the background (or record why not). `tracker`: when
    /// listening on every interface, the address we reach the tracker from decides whether
    /// we are behind a NAT (a route lookup; nothing is sent).
    pub fn start(
        listen: SocketAddr,
        tracker: Option<SocketAddr>,
        enabled: bool,
        lease_secs: u32,
        shutdown: CancellationToken,
    ) -> Arc<PortMapper> {
        if !enabled {
            return Self::new(
                PortMappingState::Off,
                Some("port_mapping = false in the config".into()),
            );
        }
        let ip = match (listen.ip().is_unspecified(), tracker) {
            (true, Some(t)) => local_addr_towards(listen, t).map_or(listen.ip(), |a| a.ip()),
            _ => listen.ip(),
        };
        if !needs_mapping(ip) {
            return Self::new(
                PortMappingState::NotNeeded,
                Some(format!("{ip} is not a private address")),
            );
        }
        let me = Self::new(PortMappingState::Searching, None);
        let task = me.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = task.run(listen, lease_secs) => {}
            }
        });
        me
    }

    pub fn status(&self) -> PortMappingStatus {
        self.status.lock().expect("lock").clone()
    }

    /// The public address to announce, when the gateway mapped one.
    pub fn external_addr(&self) -> Option<SocketAddr> {
        let s = self.status.lock().expect("lock");
        (s.state == PortMappingState::Mapped)
            .then(|| s.external_addr.as_deref()?.parse().ok())
            .flatten()
    }

    fn set(&self, f: impl FnOnce(&mut PortMappingStatus)) {
        f(&mut self.status.lock().expect("lock"));
    }

    async fn run(&self, listen: SocketAddr, lease_secs: u32) {
        loop {
            let wait = match self.map_once(listen, lease_secs).await {
                Ok(granted) => renew_after(granted),
                Err(e) => {
                    tracing::info!(error = %e, "no port mapping (retrying in {}s)", RETRY_AFTER.as_secs());
                    *self.active.lock().await = None;
                    self.set(|s| {
                        s.state = PortMappingState::Failed;
                        s.external_addr = None;
                        s.detail = Some(e);
                    });
                    RETRY_AFTER
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Find the gateway (again: it may have rebooted or changed) and add or renew the mapping.
    /// Returns the lease granted.
    #[tracing::instrument(skip(self), level = "debug")]
    async fn map_once(&self, listen: SocketAddr, lease_secs: u32) -> Result<u32, String> {
        let mut opts = SearchOptions::default();
        opts.timeout = Some(SEARCH_TIMEOUT);
        opts.single_search_timeout = Some(SEARCH_TIMEOUT);
        let gw = search_gateway(opts)
            .await
            .map_err(|e| format!("no UPnP-IGD gateway answered: {e}"))?;
        self.set(|s| {
            s.protocol = Some("UPnP-IGD".into());
            s.gateway = Some(gw.addr.to_string());
        });
        let local = local_addr_towards(listen, gw.addr)?;
        let port = listen.port();
        // The same port first: then the address the tracker already hands out (our router's
        // public IP, our listen port) is right without announcing anything.
        let mut lease = lease_secs;
        let mut res = gw
            .add_port(PortMappingProtocol::TCP, port, local, lease, DESCRIPTION)
            .await;
        if matches!(res, Err(AddPortError::OnlyPermanentLeasesSupported)) {
            lease = 0;
            res = gw
                .add_port(PortMappingProtocol::TCP, port, local, lease, DESCRIPTION)
                .await;
        }
        let external_port = match res {
            Ok(()) => port,
            Err(AddPortError::PortInUse) => gw
                .add_any_port(PortMappingProtocol::TCP, local, lease, DESCRIPTION)
                .await
                .map_err(|e: AddAnyPortError| {
                    format!("gateway {} refused a mapping: {e}", gw.addr)
                })?,
            Err(e) => return Err(format!("gateway {} refused a mapping: {e}", gw.addr)),
        };
        let ip = gw
            .get_external_ip()
            .await
            .map_err(|e| format!("gateway {} has no external address: {e}", gw.addr))?;
        let external = SocketAddr::new(ip, external_port);
        let was = self.external_addr();
        if was != Some(external) {
            tracing::info!(%external, gateway = %gw.addr, lease, "port mapped");
        }
        self.set(|s| {
            s.state = PortMappingState::Mapped;
            s.external_addr = Some(external.to_string());
            s.lease_secs = lease;
            s.detail = None;
        });
        *self.active.lock().await = Some((gw, external_port));
        Ok(lease)
    }

    /// Delete the mapping (clean shutdown), waiting at most [`RELEASE_TIMEOUT`].
    pub async fn release(&self) {
        let Some((gw, port)) = self.active.lock().await.take() else {
            return;
        };
        match tokio::time::timeout(
            RELEASE_TIMEOUT,
            gw.remove_port(PortMappingProtocol::TCP, port),
        )
        .await
        {
            Ok(Ok(())) => tracing::info!(port, gateway = %gw.addr, "port mapping deleted"),
            Ok(Err(e)) => tracing::warn!(port, error = %e, "cannot delete the port mapping"),
            Err(_) => tracing::warn!(port, "gateway did not answer the mapping deletion in time"),
        }
        self.set(|s| {
            s.state = PortMappingState::Off;
            s.external_addr = None;
            s.detail = Some("deleted at shutdown".into());
        });
    }
}

/// The LAN address the gateway must forward to: the listen address, or (listening on every
/// interface) the one the kernel uses to reach the gateway.
fn local_addr_towards(listen: SocketAddr, gateway: SocketAddr) -> Result<SocketAddr, String> {
    if !listen.ip().is_unspecified() {
        return Ok(listen);
    }
    let probe = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.connect(gateway).map(|()| s))
        .and_then(|s| s.local_addr())
        .map_err(|e| format!("no route to gateway {gateway}: {e}"))?;
    Ok(SocketAddr::new(probe.ip(), listen.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_unspecified_addresses_need_a_mapping() {
        for a in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.1",
            "192.168.1.2",
            "100.64.0.1",
            "100.127.1.1",
            "0.0.0.0",
        ] {
            assert!(needs_mapping(a.parse().unwrap()), "{a}");
        }
        for a in [
            "127.0.0.1",
            "11.77.0.11",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "169.254.1.1",
            "::1",
            "2001:db8::1",
        ] {
            assert!(!needs_mapping(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn leases_are_renewed_halfway_never_in_a_tight_loop() {
        assert_eq!(renew_after(3600), Duration::from_secs(1800));
        assert_eq!(renew_after(10), Duration::from_secs(15));
        assert_eq!(renew_after(0), Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn disabled_or_public_never_searches() {
        let t = CancellationToken::new();
        let off = PortMapper::start(
            "192.168.1.2:7000".parse().unwrap(),
            None,
            false,
            3600,
            t.clone(),
        );
        assert_eq!(off.status().state, PortMappingState::Off);
        let public = PortMapper::start(
            "127.0.0.1:7000".parse().unwrap(),
            None,
            true,
            3600,
            t.clone(),
        );
        assert_eq!(public.status().state, PortMappingState::NotNeeded);
        assert_eq!(public.external_addr(), None);
        // Every interface, but the tracker is reached over loopback: nothing to map.
        let any = PortMapper::start(
            "0.0.0.0:7000".parse().unwrap(),
            Some("127.0.0.1:5000".parse().unwrap()),
            true,
            3600,
            t,
        );
        assert_eq!(any.status().state, PortMappingState::NotNeeded);
        assert!(any.status().detail.unwrap().contains("127.0.0.1"));
    }
}
