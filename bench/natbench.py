#!/usr/bin/env python3
"""natbench.py — connection paths across NATs in the NAT lab (issue #14 item 6).

  bench/natbench.py [--size 256MiB] [--runs 3] [--rate 200mbit] [--bin-dir target/debug] [--json OUT]
                    [--paths direct,relayed]

Brings up bench/natlab.py with sites pub, pub, eim, eim, sym, upnp, sym (every host's egress
capped at --rate with tc tbf), runs trackerd on the public side with its relay (`relay_listen`
on port 5001) and one minitorrd per site, and per path
downloads fresh files (one holder each, so no other peer can serve them):

  direct        pub  <- pub    plain connection
  upnp          pub  <- upnp   direct to the router's mapped port (miniupnpd)
  punched       eim  <- eim    TCP simultaneous open through two port-preserving NATs
  punched-rev   pub  <- sym    the symmetric-NAT holder's connection lands on the listener
  relayed       sym  <- sym    neither can accept nor be punched to: only the tracker's relay

Reports, per path, time to the first verified piece (`first_piece_ms`: includes the direct
attempt's stagger, the tracker round trips of a punch, TLS, and one 512 KiB piece) on small
files, and throughput on --size files from the first verified piece to the end (the
connection setup is the first number's business). Needs root, nftables and miniupnpd (like the lab).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MT_NETLAB_PREFIX", "natbench")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import natlab  # noqa: E402

PATHS = {  # name -> (downloader site, holder site), 1-based as natlab numbers them
    "direct": (1, 2),
    "upnp": (1, 6),
    "punched": (3, 4),
    "punched-rev": (1, 5),
    "relayed": (5, 7),
}
KINDS = ["pub", "pub", "eim", "eim", "sym", "upnp", "sym"]


def parse_size(s: str) -> int:
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for u, m in units.items():
        if s.endswith(u):
            return int(float(s[: -len(u)]) * m)
    return int(s)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Lab:
    def __init__(self, a, work: Path):
        self.a, self.work = a, work
        self.bins = Path(a.bin_dir).resolve()
        self.procs: list[subprocess.Popen] = []
        self.info = natlab.up(KINDS, a.rate)
        t = self.info["tracker"]
        self.tracker = f"{t['addr']}:5000"
        (work / "t").mkdir()
        # The relay, for the sym <- sym path (the only one that needs it: the others must not
        # take it, and the script checks the path each reports).
        cfg = work / "t" / "trackerd.toml"
        cfg.write_text('relay_listen = "%s:5001"\n' % t["addr"])
        self.spawn(t["ns"], "trackerd", ["--listen", self.tracker, "--state-dir", str(work / "t" / "state"),
                                         "--config", str(cfg), "--allow-plaintext"],
                   work / "t" / "trackerd.log")
        self.wait(lambda: "listening on" in (work / "t" / "trackerd.log").read_text(), "trackerd")
        self.sockets = {}
        for i, site in self.info["sites"].items():
            d = work / f"p{i}"
            d.mkdir(mode=0o700)
            sock = d / "ctl.sock"
            self.spawn(site["ns"], "minitorrd", ["--socket", str(sock), "--state-dir", str(d / "state"),
                                                 "--tracker", self.tracker, "--allow-plaintext",
                                                 f"{site['addr']}:7000"], d / "minitorrd.log")
            self.sockets[int(i)] = sock
        for i, sock in self.sockets.items():
            self.wait(lambda: sock.exists(), f"minitorrd {i}")

    def spawn(self, ns, binary, args, logf):
        p = subprocess.Popen(["ip", "netns", "exec", ns, str(self.bins / binary), *args],
                             stdout=subprocess.DEVNULL, stderr=open(logf, "ab"),
                             env={**os.environ, "RUST_LOG": "info"})
        self.procs.append(p)

    def wait(self, ok, what, timeout=30):
        end = time.time() + timeout
        while not ok():
            if time.time() > end:
                raise RuntimeError(f"{what} did not start")
            time.sleep(0.1)

    def ctl(self, i, *args, check=True):
        r = subprocess.run([str(self.bins / "minitorrctl"), "--socket", str(self.sockets[i]), *args],
                           capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"site {i}: minitorrctl {args}: {r.stdout}{r.stderr}")
        return r.stdout

    def close(self):
        for p in self.procs:
            p.terminate()  # our own children, by their handles
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        natlab.down()


def download(lab: Lab, path: str, size: int, tag: str) -> dict:
    d, h = PATHS[path]
    name = f"{path}-{tag}.bin"
    src = lab.work / name
    with open(src, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    lab.ctl(h, "upload_file", str(src), "g")
    dest = lab.work / f"dl-{path}-{tag}"
    dest.mkdir()
    lab.ctl(d, "download_file", "g", name, f"{dest}/", "--wait", "--timeout", "600")
    v = json.loads(lab.ctl(d, "--json", "show_downloads"))
    e = next(x for x in v["downloads"] if x["file"] == name)
    peers = [p for p in e["peers"] if p["bytes_received"] > 0]
    src.unlink()
    (dest / name).unlink()
    # Throughput once connected: from the first verified piece to the end (the connection's
    # setup is what first_piece_ms measures; over a whole small file it would dominate).
    steady_s = max(e["elapsed_ms"] - e["first_piece_ms"], 1) / 1000
    return {"first_piece_ms": e["first_piece_ms"], "elapsed_ms": e["elapsed_ms"],
            "mbit_s": size * 8 / steady_s / 1e6, "avg_mbit_s": e["avg_bps"] * 8 / 1e6,
            "path": peers[0]["path"] if peers else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=parse_size, default=parse_size("256MiB"))
    ap.add_argument("--small", type=parse_size, default=parse_size("2MiB"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", default="200mbit")
    ap.add_argument("--bin-dir", default=str(HERE.parent / "target" / "debug"))
    ap.add_argument("--json")
    ap.add_argument("--paths", default=",".join(PATHS),
                    help="comma-separated subset of the paths to measure (default: all)")
    a = ap.parse_args()
    paths = a.paths.split(",")
    if "direct" not in paths or any(p not in PATHS for p in paths):
        ap.error(f"--paths: a subset of {', '.join(PATHS)} including direct (the reference)")
    natlab.lab.need_root()
    natlab.down()
    res: dict = {"rate": a.rate, "size": a.size, "runs": a.runs, "paths": {}}
    with tempfile.TemporaryDirectory(prefix="natbench-") as tmp:
        lab = Lab(a, Path(tmp))
        try:
            for i in lab.sockets:
                lab.ctl(i, "create_user", f"u{i}", "pw")
                lab.ctl(i, "login", f"u{i}", "pw")
            lab.ctl(1, "create_group", "g")
            for i in list(lab.sockets)[1:]:
                lab.ctl(i, "join_group", "g")
                lab.ctl(1, "accept_request", "g", f"u{i}")
            lab.wait(lambda: json.loads(lab.ctl(6, "--json", "status"))["port_mapping"]["state"] == "mapped",
                     "UPnP mapping")
            for path in paths:
                small = [download(lab, path, a.small, f"s{r}") for r in range(a.runs)]
                big = [download(lab, path, a.size, f"b{r}") for r in range(a.runs)]
                row = {
                    "path_reported": sorted({x["path"] for x in small + big if x["path"]}),
                    "first_piece_ms": [x["first_piece_ms"] for x in small],
                    "first_piece_ms_median": statistics.median(x["first_piece_ms"] for x in small),
                    "mbit_s": [round(x["mbit_s"], 1) for x in big],
                    "mbit_s_median": round(statistics.median(x["mbit_s"] for x in big), 1),
                    "whole_download_mbit_s": [round(x["avg_mbit_s"], 1) for x in big],
                }
                res["paths"][path] = row
                log(f"{path:12} {row}")
        finally:
            lab.close()
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    direct = res["paths"]["direct"]["mbit_s_median"]
    print(f"| path | reported as | first verified piece (median of {a.runs}, ms) | throughput "
          f"({a.size >> 20} MiB, median, Mbit/s) | vs direct |")
    print("| --- | --- | --- | --- | --- |")
    for p, r in res["paths"].items():
        print(f"| {p} | {', '.join(r['path_reported'])} | {r['first_piece_ms_median']:.0f} "
              f"({', '.join(map(str, r['first_piece_ms']))}) | {r['mbit_s_median']} "
              f"({', '.join(map(str, r['mbit_s']))}) | {r['mbit_s_median'] / direct:.2f}× |")


if __name__ == "__main__":
    main()
