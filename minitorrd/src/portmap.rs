//! Port mapping (issue #14): when the peer listen address is private, ask the LAN's gateway
//! (UPnP-IGD, through the `igd-next` crate; when no UPnP-IGD gateway answers, PCP or NAT-PMP to
//! the default gateway, through `crab_nat`) to forward the same port on its public address to
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
/// PCP/NAT-PMP retries (UDP 5351): 250 ms, doubled, three tries — a gateway that does not speak
/// it answers with an ICMP port unreachable or not at all, and we do not hold the retry loop
/// for the RFC's full 64 s.
const PMP_TIMEOUTS: crab_nat::TimeoutConfig = crab_nat::TimeoutConfig {
    initial_timeout: Duration::from_millis(250),
    max_retries: 2,
    max_retry_timeout: Some(Duration::from_secs(1)),
};

/// The mapping we hold at the gateway: what to renew and delete.
enum Active {
    Igd(Gateway<Tokio>, u16),
    Pmp(crab_nat::PortMapping),
}

/// The IPv4 default gateway from `/proc/net/route` (the kernel's table, in hex, little endian):
/// where PCP and NAT-PMP requests go (they have no discovery).
pub fn default_gateway_v4(route_table: &str) -> Option<Ipv4Addr> {
    route_table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags ...; a default route has destination 0 and RTF_GATEWAY.
        let flags = u16::from_str_radix(f.get(3)?, 16).ok()?;
        if *f.get(1)? != "00000000" || flags & 0x2 == 0 {
            return None;
        }
        let gw = u32::from_str_radix(f.get(2)?, 16).ok()?;
        Some(Ipv4Addr::from(gw.swap_bytes())).filter(|g| !g.is_unspecified())
    })
}

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
    active: tokio::sync::Mutex<Option<Active>>,
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

    /// Add or renew the mapping: UPnP-IGD first, else PCP/NAT-PMP. Returns the lease granted.
    #[tracing::instrument(skip(self), level = "debug")]
    async fn map_once(&self, listen: SocketAddr, lease_secs: u32) -> Result<u32, String> {
        // A PCP/NAT-PMP mapping is renewed where it is (same external port, same nonce); when
        // that fails the gateway may have changed, so search from the start. A copy is renewed:
        // shutdown cancels this task at any await, and must still find the mapping to delete.
        let held = match &*self.active.lock().await {
            Some(Active::Pmp(m)) => Some(m.clone()),
            _ => None,
        };
        if let Some(mut m) = held {
            match m.renew().await {
                Ok(()) => return self.pmp_mapped(m).await,
                Err(e) => tracing::info!(error = %e, "renewing the PCP/NAT-PMP mapping failed"),
            }
        }
        let igd = match self.map_igd(listen, lease_secs).await {
            Ok(lease) => return Ok(lease),
            Err(e) => e,
        };
        self.map_pmp(listen, lease_secs)
            .await
            .map_err(|pmp| format!("{igd}; {pmp}"))
    }

    /// PCP, falling back to NAT-PMP, at the default gateway.
    async fn map_pmp(&self, listen: SocketAddr, lease_secs: u32) -> Result<u32, String> {
        let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        let gw = default_gateway_v4(&table)
            .ok_or_else(|| "no IPv4 default gateway to ask over PCP/NAT-PMP".to_string())?;
        self.map_pmp_at(gw, listen, lease_secs).await
    }

    async fn map_pmp_at(
        &self,
        gw: Ipv4Addr,
        listen: SocketAddr,
        lease_secs: u32,
    ) -> Result<u32, String> {
        let gw_addr = SocketAddr::new(gw.into(), crab_nat::GATEWAY_PORT);
        let local = local_addr_towards(listen, gw_addr)?;
        let port = std::num::NonZeroU16::new(listen.port())
            .ok_or_else(|| "listening on port 0".to_string())?;
        let m = crab_nat::PortMapping::new(
            gw.into(),
            local.ip(),
            crab_nat::InternetProtocol::Tcp,
            port,
            crab_nat::PortMappingOptions {
                external_port: Some(port),
                lifetime_seconds: Some(lease_secs),
                timeout_config: Some(PMP_TIMEOUTS),
            },
        )
        .await
        .map_err(|e| format!("no PCP/NAT-PMP gateway at {gw_addr} answered: {e}"))?;
        self.pmp_mapped(m).await
    }

    /// Record a PCP/NAT-PMP mapping the gateway granted (PCP says the external address in
    /// its answer; NAT-PMP needs one more request).
    async fn pmp_mapped(&self, m: crab_nat::PortMapping) -> Result<u32, String> {
        let gw = IpAddr::from(m.gateway());
        let (protocol, ip) = match m.mapping_type() {
            crab_nat::PortMappingType::Pcp { external_ip, .. } => ("PCP", external_ip),
            crab_nat::PortMappingType::NatPmp => {
                let ip = crab_nat::natpmp::external_address(m.gateway(), Some(PMP_TIMEOUTS))
                    .await
                    .map_err(|e| format!("gateway {gw} has no external address: {e}"))?;
                ("NAT-PMP", IpAddr::V4(ip))
            }
        };
        let external = SocketAddr::new(ip, m.external_port().get());
        let lease = m.lifetime();
        if self.external_addr() != Some(external) {
            tracing::info!(%external, gateway = %gw, lease, protocol, "port mapped");
        }
        self.set(|s| {
            s.state = PortMappingState::Mapped;
            s.protocol = Some(protocol.into());
            s.gateway = Some(SocketAddr::new(gw, crab_nat::GATEWAY_PORT).to_string());
            s.external_addr = Some(external.to_string());
            s.lease_secs = lease;
            s.detail = None;
        });
        *self.active.lock().await = Some(Active::Pmp(m));
        Ok(lease)
    }

    /// Find the UPnP-IGD gateway (again: it may have rebooted or changed) and add or renew the
    /// mapping. Returns the lease granted.
    async fn map_igd(&self, listen: SocketAddr, lease_secs: u32) -> Result<u32, String> {
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
        *self.active.lock().await = Some(Active::Igd(gw, external_port));
        Ok(lease)
    }

    /// Delete the mapping (clean shutdown), waiting at most [`RELEASE_TIMEOUT`].
    pub async fn release(&self) {
        let Some(active) = self.active.lock().await.take() else {
            return;
        };
        match active {
            Active::Igd(gw, port) => match tokio::time::timeout(
                RELEASE_TIMEOUT,
                gw.remove_port(PortMappingProtocol::TCP, port),
            )
            .await
            {
                Ok(Ok(())) => tracing::info!(port, gateway = %gw.addr, "port mapping deleted"),
                Ok(Err(e)) => tracing::warn!(port, error = %e, "cannot delete the port mapping"),
                Err(_) => {
                    tracing::warn!(port, "gateway did not answer the mapping deletion in time")
                }
            },
            Active::Pmp(m) => {
                let port = m.external_port().get();
                match tokio::time::timeout(RELEASE_TIMEOUT, m.try_drop()).await {
                    Ok(Ok(())) => tracing::info!(port, "PCP/NAT-PMP port mapping deleted"),
                    Ok(Err((e, _))) => {
                        tracing::warn!(port, error = %e, "cannot delete the port mapping")
                    }
                    Err(_) => {
                        tracing::warn!(port, "gateway did not answer the mapping deletion in time")
                    }
                }
            }
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
    fn the_default_gateway_comes_from_the_kernel_route_table() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(
            default_gateway_v4(table),
            Some("192.168.2.1".parse().unwrap())
        );
        // Only the LAN route, or a default route without a gateway (point-to-point): none.
        let lan_only = table.lines().take(2).collect::<Vec<_>>().join("\n");
        assert_eq!(default_gateway_v4(&lan_only), None);
        let ptp = "Iface Destination Gateway Flags\nppp0 00000000 00000000 0001\n";
        assert_eq!(default_gateway_v4(ptp), None);
        assert_eq!(default_gateway_v4(""), None);
        assert_eq!(default_gateway_v4("garbage\nx y"), None);
    }

    /// The (internal port, lifetime) of each mapping request a fake gateway saw.
    type Requests = Arc<Mutex<Vec<(u16, u32)>>>;

    /// A gateway that speaks only NAT-PMP (RFC 6886), on UDP 5351 of a loopback address:
    /// it answers PCP with "unsupported version", maps TCP ports as asked, and records each
    /// mapping request's (internal port, lifetime). `mute_renewals`: it never answers a mapping
    /// request after the first (a gateway gone quiet mid-renewal), deletions excepted.
    fn fake_natpmp_gateway(mute_renewals: bool) -> (Ipv4Addr, Requests) {
        let seen = Arc::new(Mutex::new(vec![]));
        for _ in 0..20 {
            let ip = Ipv4Addr::new(127, 77, rand_octet(), 1);
            let Ok(sock) = std::net::UdpSocket::bind((ip, crab_nat::GATEWAY_PORT)) else {
                continue;
            };
            let log = seen.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1100];
                while let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let epoch = 1000u32.to_be_bytes();
                    let reply: Vec<u8> = match (buf[0], buf[1], n) {
                        // PCP (version 2): NAT-PMP's "unsupported version", version 0.
                        (2, op, _) => [&[0, op | 0x80, 0, 1][..], &epoch].concat(),
                        // External address.
                        (0, 0, 2) => [&[0, 0x80, 0, 0][..], &epoch, &[203, 0, 113, 9]].concat(),
                        // Map TCP: internal port, suggested external port, lifetime.
                        (0, 2, 12) => {
                            let internal = u16::from_be_bytes([buf[4], buf[5]]);
                            let life = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                            let mut log = log.lock().unwrap();
                            log.push((internal, life));
                            if mute_renewals && life > 0 && log.len() > 1 {
                                continue;
                            }
                            let ext = if life == 0 { 0 } else { internal };
                            [&[0, 0x82, 0, 0][..], &epoch, &internal.to_be_bytes()]
                                .concat()
                                .into_iter()
                                .chain(ext.to_be_bytes())
                                .chain(life.to_be_bytes())
                                .collect()
                        }
                        _ => continue,
                    };
                    let _ = sock.send_to(&reply, from);
                }
            });
            return (ip, seen);
        }
        panic!("no free 127.77.x.1:5351");
    }

    fn rand_octet() -> u8 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        (t ^ std::process::id()) as u8
    }

    #[tokio::test]
    async fn natpmp_gateway_maps_renews_and_deletes_when_pcp_is_refused() {
        let (gw, seen) = fake_natpmp_gateway(false);
        let me = PortMapper::new(PortMappingState::Searching, None);
        let listen: SocketAddr = "127.0.0.1:7123".parse().unwrap();
        let lease = me.map_pmp_at(gw, listen, 60).await.unwrap();
        assert_eq!(lease, 60);
        let s = me.status();
        assert_eq!(s.state, PortMappingState::Mapped);
        assert_eq!(s.protocol.as_deref(), Some("NAT-PMP"));
        assert_eq!(s.gateway, Some(format!("{gw}:5351")));
        assert_eq!(s.external_addr.as_deref(), Some("203.0.113.9:7123"));
        assert_eq!(
            me.external_addr(),
            Some("203.0.113.9:7123".parse().unwrap())
        );
        // The next round renews the mapping it holds (no UPnP search first).
        assert_eq!(me.map_once(listen, 60).await.unwrap(), 60);
        assert_eq!(*seen.lock().unwrap(), vec![(7123, 60), (7123, 60)]);
        // Shutdown deletes it: a mapping request with lifetime 0.
        me.release().await;
        assert_eq!(seen.lock().unwrap().last(), Some(&(7123, 0)));
        assert_eq!(me.status().state, PortMappingState::Off);
        assert_eq!(me.external_addr(), None);
    }

    /// Shutdown cancels the mapping task at any await, e.g. while a renewal waits for the
    /// gateway: the mapping must still be there to delete (it was lost once, found in the lab).
    #[tokio::test]
    async fn shutdown_during_a_renewal_still_deletes_the_mapping() {
        let (gw, seen) = fake_natpmp_gateway(true);
        let me = PortMapper::new(PortMappingState::Searching, None);
        let listen: SocketAddr = "127.0.0.1:7124".parse().unwrap();
        me.map_pmp_at(gw, listen, 60).await.unwrap();
        let renewal = tokio::time::timeout(Duration::from_millis(300), me.map_once(listen, 60));
        assert!(
            renewal.await.is_err(),
            "the muted gateway answered a renewal?"
        );
        me.release().await;
        // The mapping, the renewal (sent again after 250 ms unanswered), then the deletion.
        let seen = seen.lock().unwrap().clone();
        assert!(seen.len() >= 3, "{seen:?}");
        assert!(
            seen[..seen.len() - 1].iter().all(|r| *r == (7124, 60)),
            "{seen:?}"
        );
        assert_eq!(seen.last(), Some(&(7124, 0)), "{seen:?}");
        assert_eq!(me.status().state, PortMappingState::Off);
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
