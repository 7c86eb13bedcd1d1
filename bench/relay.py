#!/usr/bin/env python3
"""Relay benchmark (issue #14): N downloads through trackerd's relay at once, on loopback.

Each of N holders is unreachable directly (it listens on 127.0.0.2, the tracker hands out
127.0.0.1), so each of N downloaders fetches its own file (distinct files: no swarming between
downloaders) through the relay. Reported: bytes relayed, wall time, aggregate throughput, and
trackerd's CPU seconds (utime + stime from /proc) per Gbit relayed, from which the relay's
capacity on 2 cores follows (2 core-seconds per second / CPU seconds per Gbit).

Everything (tracker, 2N daemons, the relay) shares this machine's cores, so the throughput
measured is a floor for the relay; the CPU per Gbit is the relay's own cost.

    bench/relay.py [--bins target/release] [--pairs 4] [--size 256M] [--tls]

By default the daemons use `insecure_plaintext_peer_links_for_benchmarks` (loopback only) so
their TLS does not eat the cores the relay is measured on; `--tls` runs real TLS peer links
(the relay's work is the same: it splices bytes either way). Data lives in /dev/shm.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROCS: list[subprocess.Popen] = []


def log(*a):
    print("[relay-bench]", *a, file=sys.stderr, flush=True)


def parse_size(s: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * units[s[-1].upper()] if s[-1].upper() in units else int(s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_for(what, pred, timeout=30.0):
    t = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > t:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def spawn(cmd, log_path: Path, env) -> subprocess.Popen:
    p = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL,
                         stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
                         env=env, start_new_session=True)
    PROCS.append(p)
    return p


class Daemon:
    def __init__(self, bins: Path, work: Path, name: str, tracker: str, env, ip: str, tls: bool):
        self.bins, self.name, self.env = bins, name, env
        self.dir = work / name
        self.dir.mkdir(mode=0o700)
        self.sock = self.dir / "ctl.sock"
        cfg = self.dir / "minitorrd.toml"
        cfg.write_text("" if tls else "insecure_plaintext_peer_links_for_benchmarks = true\n")
        port = free_port()
        self.proc = spawn([bins / "minitorrd", "--config", cfg, "--socket", self.sock,
                           "--state-dir", self.dir / "state", "--tracker", tracker,
                           f"{ip}:{port}"], self.dir / "minitorrd.log", env)
        wait_for(f"{name} up", self.sock.exists)

    def ctl(self, *args, json_out=False):
        cmd = [self.bins / "minitorrctl", "--socket", self.sock]
        cmd += (["--json"] if json_out else []) + [str(a) for a in args]
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=self.env,
                           timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(map(str, args))}: {r.stderr}")
        return json.loads(r.stdout) if json_out else r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bins", default="target/release")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--size", default="256M")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--json", help="write the result here too")
    a = ap.parse_args()
    bins = Path(a.bins).resolve()
    size = parse_size(a.size)
    work = Path(tempfile.mkdtemp(prefix="mt-relay-", dir="/dev/shm"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MINITORR", "TRACKERD", "RUST_LOG"))}
    env.update(XDG_RUNTIME_DIR=str(work), XDG_CONFIG_HOME=str(work / "xdg"), NO_COLOR="1",
               RUST_LOG="info")
    try:
        tport, rport = free_port(), free_port()
        tracker = f"127.0.0.1:{tport}"
        tdir = work / "tracker"
        tdir.mkdir()
        (tdir / "trackerd.toml").write_text(
            f'relay_listen = "127.0.0.1:{rport}"\nrelay_max_circuits_per_user = 64\n')
        tp = spawn([bins / "trackerd", "--config", tdir / "trackerd.toml", "--listen", tracker,
                    "--state-dir", tdir / "state"], tdir / "trackerd.log", env)
        wait_for("tracker", lambda: "relay listening" in (tdir / "trackerd.log").read_text())
        holders = [Daemon(bins, work, f"h{i}", tracker, env, "127.0.0.2", a.tls)
                   for i in range(a.pairs)]
        downloaders = [Daemon(bins, work, f"d{i}", tracker, env, "127.0.0.1", a.tls)
                       for i in range(a.pairs)]
        for d in holders + downloaders:
            d.ctl("create_user", d.name, "pw-" + d.name)
            d.ctl("login", d.name, "pw-" + d.name)
        owner = holders[0]
        owner.ctl("create_group", "g")
        for d in holders[1:] + downloaders:
            d.ctl("join_group", "g")
            owner.ctl("accept_request", "g", d.name)
        base = work / "base.bin"
        with open(base, "wb") as f:
            f.write(os.urandom(size))
        for i, h in enumerate(holders):
            src = h.dir / f"f{i}.bin"
            shutil.copyfile(base, src)
            with open(src, "r+b") as f:
                f.write(i.to_bytes(8, "big"))  # distinct content, distinct SHA1
            h.ctl("upload_file", src, "g")
        base.unlink()
        for h in holders:
            wait_for(f"{h.name} at the relay",
                     lambda h=h: h.ctl("status", json_out=True)["relay"].startswith("listening"))
        cpu0, t0 = proc_cpu(tp.pid), time.monotonic()
        for i, d in enumerate(downloaders):
            d.ctl("download_file", "g", f"f{i}.bin", d.dir / f"got{i}.bin")
        paths = set()
        for i, d in enumerate(downloaders):
            doc = d.ctl("wait", "g", f"f{i}.bin", json_out=True)
            dl = doc.get("download", doc)
            if dl["state"] != "complete":
                raise RuntimeError(f"{d.name}: {dl}")
            paths |= {p["path"] for p in dl["peers"]}
        wall = time.monotonic() - t0
        cpu = proc_cpu(tp.pid) - cpu0
        total = size * a.pairs
        gbit = total * 8 / 1e9
        res = {
            "pairs": a.pairs, "size": size, "peer_links": "tls" if a.tls else "plaintext",
            "bytes_relayed": total, "wall_s": round(wall, 2),
            "throughput_gbit_s": round(gbit / wall, 2),
            "relay_cpu_s": round(cpu, 2),
            "relay_cpu_s_per_gbit": round(cpu / gbit, 3),
            "relay_capacity_on_2_cores_gbit_s": round(2 * gbit / cpu, 1) if cpu > 0 else None,
            "peer_paths": sorted(paths),
        }
        print(json.dumps(res, indent=2))
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
        if paths != {"relayed"}:
            raise RuntimeError(f"expected every peer relayed, got {paths}")
    finally:
        for p in PROCS:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in PROCS:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
