//! Across NATs (issue #14) in the NAT lab (bench/natlab.py): router namespaces that masquerade
//! private sites onto a public bridge where the tracker lives — port-preserving (EIM) and
//! symmetric NATs, and routers running Debian's miniupnpd (UPnP-IGD, or only NAT-PMP/PCP).
//!
//! These tests need root (network namespaces, nftables, miniupnpd): they fail loudly, never
//! skip, when not root. CI runs the suite as root and installs nftables and miniupnpd
//! (.ci/run). The labs use the prefixes `natlab*`, so they never meet bench/lab.py's.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use minitorr_e2e::natlab::{need_root, wait_for, LabPeer, LabTracker, NatLab};
use minitorr_e2e::{random_file, sha1_file};

/// One lab at a time: two cores, and each lab is a dozen namespaces.
static LAB: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LAB.lock().unwrap_or_else(|e| e.into_inner())
}

fn status(p: &LabPeer) -> serde_json::Value {
    p.json(&["status"])
}

#[test]
fn upnp_router_maps_the_peer_port_and_shutdown_deletes_it() {
    need_root("NAT lab");
    let _l = lock();
    let tmp = tempfile::tempdir().unwrap();
    let lab = NatLab::up("natlabU", &["upnp", "eim", "pub"], None);
    let tracker = LabTracker::start(&lab, &tmp.path().join("t"), &[]);
    let mut up = LabPeer::start(&lab.sites[0], &tracker, &tmp.path().join("u"), &[]);
    let eim = LabPeer::start(&lab.sites[1], &tracker, &tmp.path().join("e"), &[]);
    let public = LabPeer::start(&lab.sites[2], &tracker, &tmp.path().join("p"), &[]);

    // Startup does not wait for the router: the control socket answered already; the mapping
    // comes in the background.
    let want = format!("{}:7000", lab.sites[0].public_addr);
    let start = Instant::now();
    wait_for("the UPnP mapping", Duration::from_secs(20), || {
        status(&up)["port_mapping"]["state"] == "mapped"
    });
    eprintln!("upnp mapping after {:?}", start.elapsed());
    let s = status(&up)["port_mapping"].clone();
    assert_eq!(s["external_addr"], want.as_str(), "{s}");
    assert_eq!(s["protocol"], "UPnP-IGD", "{s}");
    assert_eq!(s["lease_secs"], 3600, "{s}");
    assert!(
        s["gateway"].as_str().unwrap().starts_with("192.168.1.1:"),
        "{s}"
    );
    let human = up.ok(&["status"]);
    assert!(
        human.contains("port mapping:") && human.contains(&want),
        "{human}"
    );
    // The router forwards it: a DNAT rule to our host in miniupnpd's chain.
    let rules = lab.router_dump(0);
    assert!(
        rules.contains("192.168.1.2") && rules.contains("7000"),
        "{rules}"
    );

    // Behind a NAT without UPnP it keeps looking and says why; public needs nothing.
    wait_for("eim: no gateway", Duration::from_secs(20), || {
        status(&eim)["port_mapping"]["state"] == "failed"
    });
    let e = status(&eim)["port_mapping"].clone();
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("no UPnP-IGD gateway"),
        "{e}"
    );
    assert_eq!(status(&public)["port_mapping"]["state"], "not_needed");

    // A clean shutdown deletes the mapping at the router.
    up.terminate();
    let rules = lab.router_dump(0);
    let nft_only = rules.split("--- miniupnpd ---").next().unwrap();
    assert!(
        !nft_only.contains("192.168.1.2"),
        "mapping left behind:\n{rules}"
    );
}

#[test]
fn upnp_mapping_outlives_its_lease_because_it_is_renewed() {
    need_root("NAT lab");
    let _l = lock();
    let tmp = tempfile::tempdir().unwrap();
    let lab = NatLab::up("natlabR", &["upnp"], None);
    let tracker = LabTracker::start(&lab, &tmp.path().join("t"), &[]);
    let cfg = tmp.path().join("minitorrd.toml");
    std::fs::write(&cfg, "port_mapping_lease_secs = 30\n").unwrap();
    let p = LabPeer::start(
        &lab.sites[0],
        &tracker,
        &tmp.path().join("u"),
        &["--config", cfg.to_str().unwrap()],
    );
    wait_for("the UPnP mapping", Duration::from_secs(20), || {
        status(&p)["port_mapping"]["state"] == "mapped"
    });
    assert_eq!(status(&p)["port_mapping"]["lease_secs"], 30);
    // Past the lease: miniupnpd drops expired mappings, so it is there only if renewed (the
    // daemon renews halfway, every 15 s).
    std::thread::sleep(Duration::from_secs(45));
    let s = status(&p)["port_mapping"].clone();
    assert_eq!(s["state"], "mapped", "{s}");
    let rules = lab.router_dump(0);
    let nft = rules.split("--- miniupnpd ---").next().unwrap();
    assert!(nft.contains("192.168.1.2"), "mapping expired:\n{rules}");
    // The check above means something: killed (no deletion, no renewal), the mapping expires.
    drop(p);
    wait_for(
        "the unrenewed mapping to expire",
        Duration::from_secs(90),
        || {
            let rules = lab.router_dump(0);
            !rules
                .split("--- miniupnpd ---")
                .next()
                .unwrap()
                .contains("192.168.1.2")
        },
    );
}

/// A lab site's kind, as the matrix names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Public,
    Upnp,
    Eim,
    Symmetric,
}

impl Kind {
    fn lab(self) -> &'static str {
        match self {
            Kind::Public => "pub",
            Kind::Upnp => "upnp",
            Kind::Eim => "eim",
            Kind::Symmetric => "sym",
        }
    }
    const ALL: [Kind; 4] = [Kind::Public, Kind::Upnp, Kind::Eim, Kind::Symmetric];
}

/// How a cell must connect: the most direct path that can work there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path_ {
    Direct,
    Punched,
    /// Neither side can accept a connection nor punch: only a relay works.
    RelayOnly,
}

/// The matrix's expectations (downloader, holder), the floor: direct or punched whenever
/// one side is public or has a port mapping, or both sides are endpoint-independent NATs.
fn expected(downloader: Kind, holder: Kind) -> Path_ {
    use Kind::*;
    match (downloader, holder) {
        // The holder accepts connections: the downloader connects.
        (_, Public | Upnp) => Path_::Direct,
        // The holder cannot accept: the tracker has it connect out at the same moment (TCP
        // simultaneous open, or it lands on the downloader's own listener).
        (Public | Upnp | Eim, Eim) => Path_::Punched,
        (Public | Upnp, Symmetric) => Path_::Punched,
        // A symmetric NAT's next port cannot be predicted, and the other side cannot accept.
        (Symmetric, Eim | Symmetric) | (Eim, Symmetric) => Path_::RelayOnly,
    }
}

/// The tracker runs its relay (issue #14 item 4), so the RelayOnly cells must download,
/// relayed. (`false` checks instead that they fail quickly with a clear reason.)
const RELAY: bool = true;

/// trackerd's arguments for the relay: a config file with `relay_listen` on the tracker's
/// public address.
fn relay_tracker_args(lab: &NatLab, dir: &std::path::Path) -> Vec<String> {
    if !RELAY {
        return vec![];
    }
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("trackerd-relay.toml");
    std::fs::write(
        &cfg,
        format!("relay_listen = \"{}:5001\"\n", lab.tracker_ip),
    )
    .unwrap();
    vec!["--config".into(), cfg.display().to_string()]
}

#[test]
fn download_matrix_across_nats_takes_the_most_direct_path_that_works() {
    need_root("NAT lab");
    let _l = lock();
    let tmp = tempfile::tempdir().unwrap();
    // Sites 1..4 download, sites 5..8 hold (so a kind meets its own kind on another site).
    let kinds: Vec<&str> = Kind::ALL
        .iter()
        .chain(Kind::ALL.iter())
        .map(|k| k.lab())
        .collect();
    let lab = NatLab::up("natlabM", &kinds, None);
    let relay_args = relay_tracker_args(&lab, tmp.path());
    let relay_args: Vec<&str> = relay_args.iter().map(String::as_str).collect();
    let tracker = LabTracker::start(&lab, &tmp.path().join("t"), &relay_args);
    let peers: Vec<LabPeer> = lab
        .sites
        .iter()
        .enumerate()
        .map(|(i, s)| LabPeer::start(s, &tracker, &tmp.path().join(format!("p{i}")), &[]))
        .collect();
    for (i, p) in peers.iter().enumerate() {
        p.ok(&["create_user", &format!("u{i}"), "pw"]);
        p.ok(&["login", &format!("u{i}"), "pw"]);
    }
    peers[0].ok(&["create_group", "g"]);
    for (i, p) in peers.iter().enumerate().skip(1) {
        p.ok(&["join_group", "g"]);
        peers[0].ok(&["accept_request", "g", &format!("u{i}")]);
    }
    // The UPnP sites have their mapping before the matrix starts (it takes well under a second
    // in the lab; the floor here is generous).
    for p in &peers {
        if p.site.kind == "upnp" {
            wait_for("UPnP mapping", Duration::from_secs(20), || {
                status(p)["port_mapping"]["state"] == "mapped"
            });
        }
    }
    // One file per cell, held by that cell's holder only (a finished download is shared too,
    // so a file downloaded in one cell would be offered by that downloader in the next).
    let mut sums = std::collections::HashMap::new();
    for d in Kind::ALL {
        for (j, h) in Kind::ALL.iter().enumerate() {
            let name = format!("{}-from-{}.bin", d.lab(), h.lab());
            let f = tmp.path().join(&name);
            sums.insert(name, random_file(&f, 2 * 1024 * 1024 + 17));
            peers[4 + j].ok(&["upload_file", f.to_str().unwrap(), "g"]);
        }
    }

    let mut report = vec![];
    let mut failures = vec![];
    for (i, d) in Kind::ALL.iter().enumerate() {
        let downloader = &peers[i];
        for h in Kind::ALL.iter() {
            let want = expected(*d, *h);
            let name = format!("{}-from-{}.bin", d.lab(), h.lab());
            let dest = tmp.path().join(format!("dl-{}-{}", d.lab(), h.lab()));
            std::fs::create_dir_all(&dest).unwrap();
            let start = Instant::now();
            let out = downloader.ctl(&[
                "--json",
                "download_file",
                "g",
                &name,
                &format!("{}/", dest.display()),
                "--wait",
            ]);
            let took = start.elapsed();
            let ok = out.status.success();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let path = path_of(downloader, &name);
            let cell = format!("{:>4} <- {:<4}", d.lab(), h.lab());
            report.push(format!("{cell}: ok={ok} path={path:?} in {took:.1?}"));
            let should_succeed = want != Path_::RelayOnly || RELAY;
            if should_succeed {
                let got = dest.join(&name);
                if !ok || !got.exists() || sha1_file(&got) != sums[&name] {
                    failures.push(format!(
                        "{cell}: expected {want:?}, failed: {text}\n{}",
                        downloader.log_tail(15)
                    ));
                    continue;
                }
                let want_path = match want {
                    Path_::Direct => "direct",
                    Path_::Punched => "punched",
                    Path_::RelayOnly => "relayed",
                };
                if path.as_deref() != Some(want_path) {
                    failures.push(format!("{cell}: expected {want_path}, took {path:?}"));
                }
            } else {
                // No relay: it must fail cleanly, quickly and say why.
                if ok {
                    failures.push(format!(
                        "{cell}: downloaded without a relay?! path {path:?}"
                    ));
                } else if took > Duration::from_secs(60) {
                    failures.push(format!("{cell}: took {took:?} to give up"));
                } else if !text.contains("cannot reach") || !text.contains("no relay") {
                    failures.push(format!("{cell}: unclear error: {text}"));
                }
                let _ = downloader.ctl(&["cancel", "g", &name]);
            }
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "{}\n---\n{}\n--- tracker ---\n{}",
        failures.join("\n"),
        report.join("\n"),
        tail(&tracker.log(), 20)
    );
}

/// The path `show_downloads --json` reports for the download's peer that sent bytes.
fn path_of(p: &LabPeer, file: &str) -> Option<String> {
    let v = p.json(&["show_downloads"]);
    let d = v["downloads"]
        .as_array()?
        .iter()
        .find(|d| d["file"] == file)?
        .clone();
    d["peers"]
        .as_array()?
        .iter()
        .find(|x| x["bytes_received"].as_u64().unwrap_or(0) > 0)
        .and_then(|x| x["path"].as_str().map(str::to_owned))
}

fn tail(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

/// A router whose miniupnpd speaks only NAT-PMP/PCP (`enable_upnp=no`): the daemon finds no
/// UPnP-IGD gateway, falls back to PCP/NAT-PMP at its default gateway, renews the mapping
/// before its lease runs out, a downloader behind a symmetric NAT (which can neither accept
/// nor be punched to) reaches it directly through the mapping, and shutdown deletes it.
#[test]
fn natpmp_router_maps_renews_serves_and_deletes_without_upnp() {
    need_root("NAT lab");
    let _l = lock();
    let tmp = tempfile::tempdir().unwrap();
    let lab = NatLab::up("natlabP", &["natpmp", "sym"], None);
    let tracker = LabTracker::start(&lab, &tmp.path().join("t"), &[]);
    let cfg = tmp.path().join("minitorrd.toml");
    std::fs::write(&cfg, "port_mapping_lease_secs = 30\n").unwrap();
    let mut holder = LabPeer::start(
        &lab.sites[0],
        &tracker,
        &tmp.path().join("h"),
        &["--config", cfg.to_str().unwrap()],
    );
    let downloader = LabPeer::start(&lab.sites[1], &tracker, &tmp.path().join("d"), &[]);

    let start = Instant::now();
    wait_for("the NAT-PMP/PCP mapping", Duration::from_secs(30), || {
        status(&holder)["port_mapping"]["state"] == "mapped"
    });
    let mapped_at = Instant::now();
    eprintln!("natpmp mapping after {:?}", start.elapsed());
    let s = status(&holder)["port_mapping"].clone();
    let want = format!("{}:7000", lab.sites[0].public_addr);
    assert_eq!(s["external_addr"], want.as_str(), "{s}");
    assert_eq!(s["protocol"], PMP_PROTOCOL, "{s}");
    assert_eq!(s["gateway"], "192.168.1.1:5351", "{s}");
    assert_eq!(s["lease_secs"], 30, "{s}");
    let rules = lab.router_dump(0);
    let nft = rules.split("--- miniupnpd ---").next().unwrap();
    assert!(
        nft.contains("192.168.1.2") && nft.contains("7000"),
        "{rules}"
    );

    // The mapping is what makes the holder reachable: a symmetric-NAT downloader connects
    // straight to it (no relay configured, and a symmetric NAT cannot be punched to).
    holder.ok(&["create_user", "h", "pw"]);
    holder.ok(&["login", "h", "pw"]);
    downloader.ok(&["create_user", "d", "pw"]);
    downloader.ok(&["login", "d", "pw"]);
    holder.ok(&["create_group", "g"]);
    downloader.ok(&["join_group", "g"]);
    holder.ok(&["accept_request", "g", "d"]);
    let f = tmp.path().join("mapped.bin");
    let sum = random_file(&f, 1024 * 1024 + 5);
    holder.ok(&["upload_file", f.to_str().unwrap(), "g"]);
    let dest = tmp.path().join("dl");
    std::fs::create_dir_all(&dest).unwrap();
    downloader.ok(&[
        "download_file",
        "g",
        "mapped.bin",
        &format!("{}/", dest.display()),
        "--wait",
    ]);
    assert_eq!(sha1_file(&dest.join("mapped.bin")), sum);
    assert_eq!(
        path_of(&downloader, "mapped.bin").as_deref(),
        Some("direct")
    );

    // Past the 30 s lease: miniupnpd drops expired NAT-PMP/PCP mappings, so it is still there
    // only because the daemon renewed it (halfway, every 15 s; 52 s falls between renewals).
    let past_lease = Duration::from_secs(52);
    if let Some(rest) = past_lease.checked_sub(mapped_at.elapsed()) {
        std::thread::sleep(rest);
    }
    let s = status(&holder)["port_mapping"].clone();
    assert_eq!(s["state"], "mapped", "{s}");
    assert_eq!(s["protocol"], PMP_PROTOCOL, "{s}");
    let rules = lab.router_dump(0);
    let nft = rules.split("--- miniupnpd ---").next().unwrap();
    assert!(nft.contains("192.168.1.2"), "mapping expired:\n{rules}");

    // A clean shutdown deletes it at the router.
    holder.terminate();
    let rules = lab.router_dump(0);
    let nft = rules.split("--- miniupnpd ---").next().unwrap();
    assert!(
        !nft.contains("192.168.1.2"),
        "mapping left behind:\n{rules}"
    );
}

/// What Debian's miniupnpd answers first: crab_nat asks PCP (RFC 6887 recommends it) and
/// falls back to NAT-PMP only when the gateway says it speaks the older version.
const PMP_PROTOCOL: &str = "PCP";
