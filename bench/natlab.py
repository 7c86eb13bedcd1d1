#!/usr/bin/env python3
"""natlab.py — the NAT lab: private sites behind router namespaces that NAT onto a public bridge.

  bench/natlab.py up KIND [KIND ...]   one site per KIND (site I = the I-th KIND, from 1):
        pub   the host sits on the public bridge itself (11.77.0.(10+I))
        eim   a router masquerades the host's LAN: endpoint-independent, port-preserving
              mapping (nftables `masquerade`, no `random`/`persistent`), inbound connections
              dropped unless they belong to a connection the host started (a home router)
        sym   symmetric: `masquerade fully-random` (a fresh random port per connection, so per
              destination), inbound dropped the same way (a carrier-grade / office NAT)
        upnp  like eim, plus Debian's miniupnpd on the router (UPnP-IGD and NAT-PMP on the LAN
              side; mappings become nftables DNAT rules in its own chains)
        natpmp  like upnp, but miniupnpd speaks only NAT-PMP/PCP (enable_upnp=no): no SSDP, so
              a daemon must fall back from UPnP-IGD to PCP/NAT-PMP on UDP 5351
      [--rate RATE]   cap every host's and the tracker's egress (tc tbf, e.g. 200mbit)
  bench/natlab.py exec I CMD...        run CMD in site I's host ("t": the tracker host)
  bench/natlab.py info                 the lab as JSON (namespaces, addresses, kinds)
  bench/natlab.py down | status

Layout (prefix P = $MT_NETLAB_PREFIX, default "natlab", so it never meets bench/lab.py's
"mtlab" or another helper's lab):

  P-pub  bridge br0, public net 11.77.0.0/24
  P-t    the tracker host, 11.77.0.1 on the public bridge
  P-hI   site I's host: pub -> 11.77.0.(10+I); otherwise 192.168.I.2/24 behind P-rI
  P-rI   site I's router: eth0 11.77.0.(10+I) (public side), lan0 192.168.I.1/24

The public net is a globally routed-looking range on purpose: miniupnpd refuses to map ports
when its WAN address is private or reserved (RFC 1918, CGNAT, the TEST-NETs), and minitorrd asks
for a mapping only when its own address is private. The namespaces have no link to the host's
network, so nothing leaves the machine. Needs root, iproute2, nftables (and miniupnpd for upnp).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MT_NETLAB_PREFIX", "natlab")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab  # noqa: E402  (shared helpers: sh, quiet_ns, need_root, namespaces, prefix)

PUBLIC = "11.77.0"
KINDS = ("pub", "eim", "sym", "upnp", "natpmp")


def P() -> str:
    return lab.prefix()


def pub_ns() -> str:
    return f"{P()}-pub"


def host_ns(i) -> str:
    return f"{P()}-t" if str(i) == "t" else f"{P()}-h{i}"


def router_ns(i: int) -> str:
    return f"{P()}-r{i}"


def state_dir() -> Path:
    return lab.state_dir()


def info_path() -> Path:
    return state_dir() / "natlab.json"


def need_tools(kinds):
    missing = [t for t in ("ip", "nft") if not shutil.which(t)]
    if ("upnp" in kinds or "natpmp" in kinds) and not shutil.which("miniupnpd"):
        missing.append("miniupnpd")
    if missing:
        raise RuntimeError(f"natlab: missing {', '.join(missing)} (apt-get install -y iproute2 nftables "
                           f"miniupnpd; .ci/run installs them)")


def veth(a_ns: str, a_name: str, b_ns: str, b_name: str):
    """A veth pair with end a_name in a_ns and b_name in b_ns (temporary names in the root ns
    are unique per lab prefix)."""
    ta, tb = f"{P()}x{a_name}"[:15], f"{P()}y{b_name}"[:15]
    lab.sh("ip", "link", "add", ta, "type", "veth", "peer", "name", tb)
    lab.sh("ip", "link", "set", ta, "netns", a_ns)
    lab.sh("ip", "link", "set", tb, "netns", b_ns)
    lab.sh("ip", "-n", a_ns, "link", "set", ta, "name", a_name)
    lab.sh("ip", "-n", b_ns, "link", "set", tb, "name", b_name)


def new_ns(ns: str):
    lab.sh("ip", "netns", "add", ns)
    lab.quiet_ns(ns)
    lab.sh("ip", "-n", ns, "link", "set", "lo", "up")


def on_public(ns: str, port_name: str, address: str):
    """Join namespace ns to the public bridge with eth0 = address/24."""
    veth(ns, "eth0", pub_ns(), port_name)
    lab.sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
    lab.sh("ip", "-n", ns, "link", "set", "eth0", "up")
    lab.sh("ip", "-n", pub_ns(), "link", "set", port_name, "master", "br0")
    lab.sh("ip", "-n", pub_ns(), "link", "set", port_name, "up")


def nft(ns: str, ruleset: str):
    r = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=ruleset, text=True,
                       capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"nft in {ns}: {r.stderr.strip()}\n{ruleset}")


def router_rules(kind: str) -> str:
    """The router's own NAT and firewall: masquerade onto eth0 (random-fully for sym), and drop
    whatever arrives on eth0 that is neither a reply to a connection from inside nor DNATed by a
    UPnP mapping. Drop, never reject: a dropped SYN leaves no conntrack entry behind, so a later
    outgoing SYN of a hole punch keeps its port (a reject would also abort the peer's attempt)."""
    masq = "masquerade fully-random" if kind == "sym" else "masquerade"
    return f"""
table ip natlab {{
    chain postrouting {{
        type nat hook postrouting priority srcnat + 10; policy accept;
        oifname "eth0" {masq}
    }}
    chain forward {{
        type filter hook forward priority filter + 10; policy accept;
        iifname "eth0" ct state established,related accept
        iifname "eth0" ct status dnat accept
        iifname "eth0" drop
    }}
    chain input {{
        type filter hook input priority filter + 10; policy accept;
        iifname "eth0" ct state established,related accept
        iifname "eth0" drop
    }}
}}
"""


# miniupnpd's nftables backend (Debian's miniupnpd-nftables) fills chains `miniupnpd`,
# `prerouting_miniupnpd` and `postrouting_miniupnpd` of table inet "filter"; we create them and
# the base chains that jump to them (what /etc/miniupnpd/nft_init.sh does on a real router).
MINIUPNPD_RULES = """
table inet filter {
    chain forward {
        type filter hook forward priority filter; policy accept;
        jump miniupnpd
    }
    chain miniupnpd {
    }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        jump prerouting_miniupnpd
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        jump postrouting_miniupnpd
    }
    chain prerouting_miniupnpd {
    }
    chain postrouting_miniupnpd {
    }
}
"""


def start_miniupnpd(i: int, upnp: bool = True):
    sd = state_dir()
    conf = sd / f"miniupnpd-r{i}.conf"
    conf.write_text("\n".join([
        "ext_ifname=eth0",
        "listening_ip=lan0",
        "http_port=0",
        "enable_natpmp=yes",
        f"enable_upnp={'yes' if upnp else 'no'}",
        "secure_mode=yes",
        "system_uptime=yes",
        "ipv6_disable=yes",
        # PCP grants at least 120 s by default; 30 lets the tests see a lease renewed in time.
        "min_lifetime=30",
        f"lease_file={sd}/miniupnpd-r{i}.leases",
        "uuid=3a7c1d7e-0000-4000-8000-00000000000" + str(i % 10),
        "allow 1024-65535 192.168.0.0/16 1024-65535",
        "deny 0-65535 0.0.0.0/0 0-65535",
        "",
    ]))
    # A lease file left by an earlier lab would bring back its mappings.
    (sd / f"miniupnpd-r{i}.leases").unlink(missing_ok=True)
    log = open(sd / f"miniupnpd-r{i}.log", "ab")
    pidfile = sd / f"miniupnpd-r{i}.pid"
    p = subprocess.Popen(["ip", "netns", "exec", router_ns(i), "miniupnpd", "-d", "-f", str(conf),
                          "-P", str(pidfile)], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    (sd / f"miniupnpd-r{i}.ourpid").write_text(str(p.pid))
    # Ready when it listens for SSDP (UDP 1900), or NAT-PMP/PCP (UDP 5351) without UPnP, in the
    # router's namespace.
    port = ":1900" if upnp else ":5351"
    for _ in range(100):
        if p.poll() is not None:
            raise RuntimeError(f"miniupnpd on router {i} exited: "
                               f"{(sd / f'miniupnpd-r{i}.log').read_text()[-2000:]}")
        r = lab.sh("ip", "netns", "exec", router_ns(i), "ss", "-lnu", check=False)
        if port in r.stdout:
            return
        time.sleep(0.05)
    raise RuntimeError(f"miniupnpd on router {i} not listening on UDP {port} after 5 s")


def up(kinds: list[str], rate: str | None = None) -> dict:
    lab.need_root()
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown site kind {k!r} (one of {', '.join(KINDS)})")
    if not 1 <= len(kinds) <= 50:
        raise ValueError("1..50 sites")
    need_tools(kinds)
    if pub_ns() in lab.namespaces():
        raise RuntimeError(f"natlab '{P()}' already up (natlab.py down first)")
    state_dir().mkdir(parents=True, exist_ok=True)
    try:
        return build(kinds, rate)
    except BaseException:
        down()
        raise


def build(kinds: list[str], rate: str | None) -> dict:
    new_ns(pub_ns())
    lab.sh("ip", "-n", pub_ns(), "link", "add", "br0", "type", "bridge")
    lab.sh("ip", "-n", pub_ns(), "link", "set", "br0", "up")
    new_ns(host_ns("t"))
    on_public(host_ns("t"), "pt", f"{PUBLIC}.1")
    info = {"prefix": P(), "tracker": {"ns": host_ns("t"), "addr": f"{PUBLIC}.1"}, "sites": {}}
    for i, kind in enumerate(kinds, start=1):
        public = f"{PUBLIC}.{10 + i}"
        h = host_ns(i)
        new_ns(h)
        site = {"kind": kind, "ns": h, "public_addr": public}
        if kind == "pub":
            on_public(h, f"p{i}", public)
            site["addr"] = public
        else:
            r = router_ns(i)
            new_ns(r)
            on_public(r, f"p{i}", public)
            veth(r, "lan0", h, "eth0")
            lab.sh("ip", "-n", r, "addr", "add", f"192.168.{i}.1/24", "dev", "lan0")
            lab.sh("ip", "-n", r, "link", "set", "lan0", "up")
            lab.sh("ip", "-n", h, "addr", "add", f"192.168.{i}.2/24", "dev", "eth0")
            lab.sh("ip", "-n", h, "link", "set", "eth0", "up")
            lab.sh("ip", "-n", h, "route", "add", "default", "via", f"192.168.{i}.1")
            lab.sh("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            nft(r, router_rules(kind))
            if kind in ("upnp", "natpmp"):
                nft(r, MINIUPNPD_RULES)
                start_miniupnpd(i, upnp=kind == "upnp")
            site.update(addr=f"192.168.{i}.2", router_ns=r, gateway=f"192.168.{i}.1")
        info["sites"][str(i)] = site
        if rate:
            set_rate(h, rate)
    if rate:
        set_rate(host_ns("t"), rate)
    info_path().write_text(json.dumps(info, indent=2))
    return info


def set_rate(ns: str, rate: str):
    lab.sh("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
    if rate != "none":
        lab.sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
               "rate", rate, "burst", "256kb", "latency", "100ms")


def down():
    lab.need_root()
    sd = state_dir()
    if sd.exists():
        for pf in sd.glob("miniupnpd-r*.ourpid"):
            try:
                pid = int(pf.read_text())
                os.killpg(pid, signal.SIGTERM)  # the process group we started, by its id
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.02)
            except (OSError, ValueError):
                pass
            pf.unlink(missing_ok=True)
    for ns in lab.namespaces():
        lab.sh("ip", "netns", "del", ns, check=False)
    info_path().unlink(missing_ok=True)


def main():
    args = sys.argv[1:]
    cmd = args.pop(0) if args else ""
    if cmd == "up":
        rate = None
        if "--rate" in args:
            k = args.index("--rate")
            rate = args[k + 1]
            del args[k:k + 2]
        print(json.dumps(up(args, rate), indent=2))
    elif cmd == "down":
        down()
    elif cmd == "exec":
        lab.need_root()
        i = args.pop(0)
        os.execvp("ip", ["ip", "netns", "exec", host_ns(i), *args])
    elif cmd == "info":
        print(info_path().read_text() if info_path().exists() else "{}")
    elif cmd == "status":
        print("\n".join(lab.namespaces()) or f"no lab '{P()}'")
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
