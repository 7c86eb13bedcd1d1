#!/usr/bin/env python3
"""lab.py — hosts as network namespaces on one bridge, with capped uplinks and emulated links.

Each host is a network namespace with one interface eth0 (10.77.0.I/24) joined to a bridge (in
a namespace of its own), so traffic between hosts really crosses a (virtual) network:

  - a host's upload can be capped with tc tbf on its eth0 (`RATE`, e.g. 50mbit);
  - a host's link can be *emulated*: its veth then does not join the bridge directly; mt-netem
    (bench/netem, AF_PACKET) forwards frames between the host's cable and a second veth on the
    bridge, holding them for a one-way delay, with random loss and an optional rate cap, in each
    direction. TCP sees the delay and loss for real (this kernel has no sch_netem).

  bench/lab.py up N [RATE]                      hosts 1..N, egress of each capped at RATE
  bench/lab.py up N [RATE] --emulate I[,J..] --delay MS [--loss P] [--jitter MS] [--rate-mbit M]
  bench/lab.py rate I RATE                      change host I's egress cap ("none" removes it)
  bench/lab.py exec I CMD...                    run CMD inside host I
  bench/lab.py addr I                           print host I's address
  bench/lab.py stats I                          mt-netem counters of host I's emulated link
  bench/lab.py check                            self-check of the emulator (ping RTT, loss,
                                                TCP throughput); writes JSON to stdout
  bench/lab.py down | status

Needs root (namespaces, AF_PACKET) and iproute2. MT_NETLAB_PREFIX (default "mtlab") names the
namespaces so two labs coexist; MT_NETEM_BIN points at mt-netem (default: target/release).
Only addresses inside these namespaces are used; nothing leaves the machine.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBNET = "10.77.0"


def prefix() -> str:
    return os.environ.get("MT_NETLAB_PREFIX", "mtlab")


def netem_bin() -> Path:
    return Path(os.environ.get("MT_NETEM_BIN", ROOT / "target" / "release" / "mt-netem"))


def state_dir() -> Path:
    return Path("/run") / f"mt-lab-{prefix()}"


def sh(*args, check=True, capture=True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], capture_output=capture, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} -> {r.returncode}: {r.stderr.strip()}")
    return r


def host_ns(i: int) -> str:
    return f"{prefix()}-h{i}"


def sw_ns() -> str:
    return f"{prefix()}-sw"


def addr(i: int) -> str:
    return f"{SUBNET}.{i}"


def exec_prefix(i: int) -> list:
    return ["ip", "netns", "exec", host_ns(i)]


def need_root():
    if os.geteuid() != 0:
        sys.exit("lab: must run as root (network namespaces, raw packet sockets)")


def namespaces() -> list[str]:
    out = sh("ip", "netns", "list").stdout
    return [l.split()[0] for l in out.splitlines() if l.split() and l.split()[0].startswith(prefix() + "-")]


def quiet_ns(ns: str):
    # No IPv6 (router solicitations, DAD) so the only frames on a link are the test's own.
    for k in ("all", "default"):
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{k}.disable_ipv6=1", check=False)


def ethtool() -> str:
    import shutil
    exe = shutil.which("ethtool")
    if not exe:
        subprocess.run(["apt-get", "install", "-y", "ethtool"], capture_output=True)
        exe = shutil.which("ethtool")
    if not exe:
        raise RuntimeError("ethtool missing and apt-get install ethtool failed (the lab turns TSO off)")
    return exe


def set_rate(i: int, rate: str | None):
    ns = host_ns(i)
    sh("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
    if rate and rate != "none":
        # as the shared netlab: a token bucket, 256 kB burst, 100 ms of queue
        sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
           "rate", rate, "burst", "256kb", "latency", "100ms")


def loss_value(v) -> float:
    """A loss option as mt-netem takes it ("1%", "0.01", 0.01) as a fraction."""
    if v is None:
        return 0.0
    s = str(v).strip()
    return float(s[:-1]) / 100 if s.endswith("%") else float(s)


def up(n: int, rate: str | None = None, emulate: dict[int, dict] | None = None):
    """Hosts 1..n; `emulate` maps a host to mt-netem options (delay, loss, jitter, rate_mbit,
    delay_ab/delay_ba/loss_ab/loss_ba; "ab" = from the host, "ba" = towards it)."""
    need_root()
    emulate = emulate or {}
    if not 1 <= n <= 200:
        raise ValueError("n must be 1..200")
    if sw_ns() in namespaces():
        raise RuntimeError(f"lab '{prefix()}' already up (lab.py down first)")
    if emulate and not netem_bin().exists():
        raise RuntimeError(f"{netem_bin()} missing: cargo build --release -p minitorr-netem")
    P, sw = prefix(), sw_ns()
    sd = state_dir()
    sd.mkdir(parents=True, exist_ok=True)
    sh("ip", "netns", "add", sw)
    quiet_ns(sw)
    sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", sw, "link", "set", "br0", "up")
    sh("ip", "-n", sw, "link", "set", "lo", "up")
    for i in range(1, n + 1):
        ns = host_ns(i)
        sh("ip", "netns", "add", ns)
        quiet_ns(ns)
        sh("ip", "link", "add", f"{P}v{i}", "type", "veth", "peer", "name", f"{P}p{i}")
        sh("ip", "link", "set", f"{P}v{i}", "netns", ns)
        sh("ip", "link", "set", f"{P}p{i}", "netns", sw)
        sh("ip", "-n", ns, "link", "set", f"{P}v{i}", "name", "eth0")
        sh("ip", "-n", ns, "addr", "add", f"{addr(i)}/24", "dev", "eth0")
        if any(loss_value(o.get(k)) > 0 for o in emulate.values() for k in ("loss", "loss_ab", "loss_ba")):
            # Loss must hit wire-sized frames, not 64 KiB GSO super-frames: every host of an
            # emulating lab has TSO off, so TCP still queues 64 KiB buffers (GSO) but the stack
            # segments them in software before the cable (gso_max_segs 1 would make TCP queue
            # one segment per buffer, and the per-buffer overhead would cap its send window).
            # Without loss, GSO frames cross mt-netem whole (a TSO NIC sends such bursts too),
            # which keeps the forwarder far from being the bottleneck.
            sh(*exec_prefix(i), ethtool(), "-K", "eth0", "tso", "off")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        if i in emulate:
            # host cable (P p i) -> mt-netem -> second veth (P f i / P b i) -> bridge
            sh("ip", "-n", sw, "link", "add", f"{P}f{i}", "type", "veth", "peer", "name", f"{P}b{i}")
            for dev in (f"{P}p{i}", f"{P}f{i}", f"{P}b{i}"):
                sh("ip", "-n", sw, "link", "set", dev, "up")
            sh("ip", "-n", sw, "link", "set", f"{P}b{i}", "master", "br0")
            start_netem(i, emulate[i])
        else:
            sh("ip", "-n", sw, "link", "set", f"{P}p{i}", "master", "br0")
            sh("ip", "-n", sw, "link", "set", f"{P}p{i}", "up")
        set_rate(i, rate)


def start_netem(i: int, opts: dict):
    P = prefix()
    stats = state_dir() / f"netem-h{i}.json"
    stats.unlink(missing_ok=True)
    cmd = ["ip", "netns", "exec", sw_ns(), str(netem_bin()), "--a", f"{P}p{i}", "--b", f"{P}f{i}",
           "--stats", str(stats)]
    for k, v in opts.items():
        if v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    log = open(state_dir() / f"netem-h{i}.log", "ab")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    line = p.stdout.readline().decode().strip()
    if line != "ready":
        p.wait(5)
        raise RuntimeError(f"mt-netem for host {i} did not start: "
                           f"{(state_dir() / f'netem-h{i}.log').read_text()[-1000:]}")
    (state_dir() / f"netem-h{i}.pid").write_text(str(p.pid))


def netem_stats(i: int) -> dict | None:
    p = state_dir() / f"netem-h{i}.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def down():
    need_root()
    sd = state_dir()
    if sd.exists():
        for pf in sd.glob("netem-h*.pid"):
            try:
                pid = int(pf.read_text())
                os.kill(pid, signal.SIGTERM)  # our own forwarder, by its pid
                for _ in range(50):
                    os.kill(pid, 0)
                    time.sleep(0.02)
            except (OSError, ValueError):
                pass
            pf.unlink(missing_ok=True)
    for ns in namespaces():
        sh("ip", "netns", "del", ns, check=False)


def tx_bytes(i: int) -> int:
    """Bytes host i has sent on its cable (its interface counter, read inside its namespace)."""
    r = sh(*exec_prefix(i), "cat", "/sys/class/net/eth0/statistics/tx_bytes")
    return int(r.stdout.strip())


# ---------------------------------------------------------------- self-check


TCPSTREAM = Path(__file__).resolve().parent / "tcpstream.py"


def tcp_stream(src: int, dst: int, nbytes: int | None = None, seconds: float | None = None,
               port: int = 5201) -> dict:
    """One TCP stream from host src to host dst (bench/tcpstream.py): the receiver in dst
    connects to the sender in src, which sends nbytes (or for `seconds`) and closes."""
    srv = subprocess.Popen([*exec_prefix(src), sys.executable, TCPSTREAM, "serve", addr(src), str(port),
                            *(["--bytes", str(nbytes)] if nbytes else ["--seconds", str(seconds)])],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "listening", srv.stderr.read()
        r = sh(*exec_prefix(dst), sys.executable, TCPSTREAM, "fetch", addr(src), str(port))
        cli = json.loads(r.stdout)
        out, err = srv.communicate(timeout=60)
        cli["sender"] = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"stderr": err}
        return cli
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


def ping(src: int, dst: int, count: int, interval: float) -> dict:
    sh(*exec_prefix(src), "ping", "-q", "-n", "-c", 1, "-W", 2, addr(dst), check=False)  # ARP
    r = sh(*exec_prefix(src), "ping", "-q", "-n", "-c", count, "-i", interval, "-W", "2", addr(dst),
           check=False)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", r.stdout)
    rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", r.stdout)
    if not m:
        raise RuntimeError(f"ping failed: {r.stdout} {r.stderr}")
    sent, got = int(m.group(1)), int(m.group(2))
    return {"sent": sent, "received": got, "loss": 1 - got / sent,
            "rtt_min_ms": float(rtt.group(1)) if rtt else None,
            "rtt_avg_ms": float(rtt.group(2)) if rtt else None,
            "rtt_max_ms": float(rtt.group(3)) if rtt else None}


def check(delay_ms: float = 200.0, loss: float = 0.01, stream_s: float = 20.0, log=print) -> dict:
    """The emulator's self-check; returns measured values and the verdict of each property
    ("ok" True/False). Brings labs up and down under the current prefix."""
    res: dict = {}
    ok = True

    def verdict(name, cond, detail):
        nonlocal ok
        res[name]["ok"] = bool(cond)
        log(f"  {name}: {'ok' if cond else 'FAILED'} — {detail}")
        ok &= bool(cond)

    def cycle(emulate):
        down()
        up(2, None, emulate)

    try:
        log("lab check: plain veth (TSO on) — baseline TCP throughput")
        cycle({})
        res["plain_veth"] = {"tcp": tcp_stream(1, 2, seconds=5), "ping": ping(1, 2, 10, 0.05)}
        log("lab check: mt-netem, 0 ms, no loss (GSO frames pass whole) — is the forwarder a bottleneck?")
        cycle({2: {"delay": 0}})
        res["netem_0ms"] = {"tcp": tcp_stream(1, 2, seconds=5), "ping": ping(1, 2, 10, 0.05),
                            "stats": netem_stats(2)}
        plain = res["plain_veth"]["tcp"]["mbit_s"]
        thru = res["netem_0ms"]["tcp"]["mbit_s"]
        verdict("netem_0ms", thru >= 1000,
                f"one TCP stream {thru:.0f} Mbit/s through mt-netem vs {plain:.0f} Mbit/s on a plain "
                f"veth (needs ≥ 1000 Mbit/s: 20× the 50 Mbit/s caps, above any WAN stream here)")
        log("lab check: mt-netem, 0 ms, lossy mode (TSO off: every wire frame crosses on its own)")
        cycle({2: {"delay": 0, "loss_ab": "0.000001"}})
        res["netem_0ms_frames"] = {"tcp": tcp_stream(1, 2, seconds=5), "stats": netem_stats(2)}
        thru = res["netem_0ms_frames"]["tcp"]["mbit_s"]
        verdict("netem_0ms_frames", thru >= 200,
                f"one TCP stream {thru:.0f} Mbit/s through mt-netem frame by frame (needs ≥ 200 Mbit/s; "
                f"TCP through 1 % loss at ≥ 100 ms RTT gets a few Mbit/s)")

        for d in (50.0, delay_ms):
            log(f"lab check: {d:g} ms one-way — ping RTT")
            cycle({2: {"delay": d}})
            pg = ping(1, 2, 10, 0.2)
            res[f"ping_{d:g}ms"] = pg
            verdict(f"ping_{d:g}ms", pg["received"] == pg["sent"] and abs(pg["rtt_avg_ms"] - 2 * d) <= 2 + 0.05 * d,
                    f"RTT avg {pg['rtt_avg_ms']} ms (min {pg['rtt_min_ms']}, max {pg['rtt_max_ms']}) for 2 × {d:g} ms")

        log(f"lab check: {delay_ms:g} ms one-way, no loss — one TCP stream for {stream_s:g} s")
        cycle({2: {"delay": delay_ms}})
        st = tcp_stream(1, 2, seconds=stream_s)
        res["tcp_delay"] = st
        ti = st["sender"]["tcp_info"]
        rtt_s = ti["rtt_us"] / 1e6
        # What the windows allow: bytes in flight (unacknowledged segments, sampled in the
        # second half) per round trip. The emulator is transparent if the steady throughput is
        # that; which window binds (congestion window, peer's window, send buffer) is reported.
        inflight = ti["unacked"] * ti["snd_mss"]
        allow = inflight * 8 / rtt_s / 1e6
        steady = st["second_half_mbit_s"]
        verdict("tcp_delay", 0.75 * allow <= steady <= 1.25 * allow,
                f"steady {steady:.1f} Mbit/s; in flight {inflight} B / RTT {rtt_s * 1000:.0f} ms = "
                f"{allow:.1f} Mbit/s; cwnd {ti['snd_cwnd']}×{ti['snd_mss']} B, peer window {ti['snd_wnd']} B, "
                f"send buffer {ti['sndbuf']} B; rwnd-limited {ti['rwnd_limited_ms']} ms, "
                f"sndbuf-limited {ti['sndbuf_limited_ms']} ms of {ti['busy_time_ms']} ms busy")

        log(f"lab check: loss {loss:.2%} towards host 2 — 4000 pings")
        cycle({2: {"delay": 0, "loss_ba": loss}})
        pg = ping(1, 2, 4000, 0.002)
        stats = netem_stats(2)
        res["loss"] = {"ping": pg, "stats": stats, "configured": loss}
        # binomial: 4000 × 1 % = 40 ± 6.3; allow ± 4 sigma (and exact counts from mt-netem)
        n = pg["sent"]
        sigma = (n * loss * (1 - loss)) ** 0.5
        lost = n - pg["received"]
        verdict("loss", abs(lost - n * loss) <= 4 * sigma + 1,
                f"{lost} of {n} pings lost = {pg['loss']:.2%} (configured {loss:.2%}); mt-netem dropped "
                f"{stats['ba']['dropped_loss']} of {stats['ba']['frames_in']} frames towards host 2")
    finally:
        down()
    res["ok"] = ok
    return res


def main():
    args = sys.argv[1:]
    cmd = args.pop(0) if args else ""
    if cmd == "up":
        n = int(args.pop(0))
        rate = args.pop(0) if args and not args[0].startswith("--") else None
        opts, hosts = {}, []
        while args:
            k = args.pop(0)
            if k == "--emulate":
                hosts = [int(x) for x in args.pop(0).split(",")]
            elif k.startswith("--"):
                opts[k[2:].replace("-", "_")] = args.pop(0)
            else:
                sys.exit(f"lab: unexpected {k}")
        up(n, rate, {h: opts for h in hosts})
    elif cmd == "down":
        down()
    elif cmd == "rate":
        need_root()
        set_rate(int(args[0]), args[1])
    elif cmd == "exec":
        need_root()
        i = int(args.pop(0))
        os.execvp("ip", ["ip", "netns", "exec", host_ns(i), *args])
    elif cmd == "addr":
        print(addr(int(args[0])))
    elif cmd == "stats":
        print(json.dumps(netem_stats(int(args[0]))))
    elif cmd == "status":
        print("\n".join(namespaces()) or f"no lab '{prefix()}'")
    elif cmd == "check":
        need_root()
        r = check(log=lambda *a: print(*a, file=sys.stderr, flush=True))
        print(json.dumps(r, indent=2))
        sys.exit(0 if r["ok"] else 1)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
