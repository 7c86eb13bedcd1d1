#!/usr/bin/env python3
"""Minitorr benchmark: one command, results in bench/results/latest.{md,json}.

  bench/run.py                       full run: 1 GiB, 3 runs (loopback downloads: 5 rotated rounds) after a warm-up, libtorrent, netlab, perf
  bench/run.py --quick               64 MiB, 1 run, no libtorrent/netlab/perf, 3 and 10 seeders (< 1 min)
  bench/run.py --quick --profile debug --no-build --out DIR     what the CI test runs

Scenarios (see docs/BENCHMARKS.md):
  upload      upload_file time (hash + register) vs the single-core SHA1 limit
  loopback    download from 1 and 3 seeders on 127.0.0.1, minitorr (TLS peer links, and plaintext
              daemons in insecure_plaintext_peer_links_for_benchmarks mode) vs libtorrent (TCP, tuned)
  netlab      the same in network namespaces, seeders capped at 200 Mbit/s each
  resources   peak RSS, CPU seconds, first piece of the downloading minitorrd (loopback runs)
  many_peers  10 vs 100 seeders, ~100 vs ~1000 small files: download time/CPU, list_files time
  profile     perf profile of the downloading minitorrd, 1 seeder on loopback (full mode)
  tree        issue #13: trees of 10,000 small / 100,000 tiny files (upload, list, download, RSS),
              a 1 GiB tree of 16 files vs a single 1 GiB file from 3 seeders (full run or --only tree)

Python 3.11 standard library only. libtorrent runs under /usr/bin/python3 (bench/lt_peer.py).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
NETLAB_PREFIX = os.environ.get("MT_BENCH_NETLAB_PREFIX", "mtbench")
# The namespace lab (bench/lab.py) works under this prefix; set before it is imported.
os.environ["MT_NETLAB_PREFIX"] = NETLAB_PREFIX
sys.path.insert(0, str(BENCH))
import lab  # noqa: E402  (bench/lab.py: namespaces, tbf caps, mt-netem emulated links)
LT_PYTHON = "/usr/bin/python3"
MiB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
def piece_size(size: int) -> int:
    """The piece size minitorrd picks for a file of `size` bytes when none is configured
    (`item::auto_piece_size`: the largest power of two from 512 KiB down to 64 KiB that still
    gives 1024 pieces); libtorrent gets the same, so both swarms trade pieces of one size. The
    scenarios check it against what minitorrd reports."""
    ps = 512 * 1024
    while ps > 64 * 1024 and -(-size // ps) < 1024:
        ps //= 2
    return ps


def check_piece_size(doc: dict, size: int):
    got = doc["file"]["piece_size"]
    if got != piece_size(size):
        raise RuntimeError(f"minitorrd chose {got}-byte pieces, bench/run.py expected {piece_size(size)}")
# Set from --keep: the swarm keeps each leecher's log in the work dir.
KEEP_LOGS = False

PROCS: list[subprocess.Popen] = []
NETLAB_UP = False


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


def parse_size(s: str) -> int:
    s = s.strip()
    units = {"gib": 1 << 30, "g": 1 << 30, "mib": MiB, "m": MiB, "kib": 1024, "k": 1024, "": 1}
    num = s.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return int(float(num) * units[s[len(num):].lower()])


def human(n: int) -> str:
    return f"{n / (1 << 30):g} GiB" if n >= 1 << 30 else f"{n / MiB:g} MiB"


def stats(values: list[float]) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
        "values": [round(v, 4) for v in vals],
    }


def ratio(a, b):
    return None if a in (None, 0) or b in (None, 0) else a / b


# ---------------------------------------------------------------- processes


def child_env(work: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MINITORR", "TRACKERD", "RUST_LOG"))}
    env["XDG_CONFIG_HOME"] = str(work / "xdg-config")  # never pick up a user's config file
    env["XDG_RUNTIME_DIR"] = str(work)
    env["NO_COLOR"] = "1"
    env["MT_NETLAB_PREFIX"] = NETLAB_PREFIX  # `netlab exec` prefixes run with this env
    return env


def spawn(cmd, log_path: Path, env, stdin=subprocess.DEVNULL, stdout=None) -> subprocess.Popen:
    lf = open(log_path, "ab")
    p = subprocess.Popen([str(c) for c in cmd], stdin=stdin, stdout=stdout or lf, stderr=lf,
                         env=env, start_new_session=True)
    PROCS.append(p)
    return p


def stop(p: subprocess.Popen, timeout=5.0):
    if p.poll() is None:
        try:
            p.terminate()
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in PROCS:
        PROCS.remove(p)


def cleanup():
    for p in list(PROCS):
        try:
            stop(p, 3)
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
    netlab_down()


def netlab_up(n: int, rate: str | None, emulate: dict | None = None):
    global NETLAB_UP
    lab.down()
    log(f"lab up {n} hosts, egress cap {rate or 'none'}"
        + (f", emulated links {emulate}" if emulate else "") + f" (prefix {NETLAB_PREFIX})")
    NETLAB_UP = True
    lab.up(n, rate, emulate)


def netlab_down():
    global NETLAB_UP
    if NETLAB_UP:
        try:
            lab.down()
        finally:
            NETLAB_UP = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid: int, key: str) -> int | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def wait_for(what, pred, timeout=20.0, every=0.02):
    t = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > t:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every)


# ---------------------------------------------------------------- minitorr cluster


class CtlError(RuntimeError):
    def __init__(self, args, doc, code):
        super().__init__(f"minitorrctl {' '.join(map(str, args))} -> exit {code}: {doc}")
        self.doc, self.code = doc, code


class Net:
    """Where processes run: 127.0.0.1 (host prefix empty) or netlab hosts 10.77.0.I."""

    def __init__(self, lab: bool):
        self.lab = lab

    def ip(self, host: int) -> str:
        return f"10.77.0.{host}" if self.lab else "127.0.0.1"

    def prefix(self, host: int) -> list:
        return lab.exec_prefix(host) if self.lab else []

    def port(self, base: int) -> int:
        return base if self.lab else free_port()


class Daemon:
    def __init__(self, name, d: Path, sock: Path, proc, addr):
        self.name, self.dir, self.sock, self.proc, self.addr = name, d, sock, proc, addr

    @property
    def pid(self):
        return self.proc.pid


class Cluster:
    def __init__(self, bins: Path, work: Path, net: Net, tracker_host=1, log_level=None,
                 plaintext=False):
        self.bins, self.work, self.net = bins, work, net
        # Daemons with insecure_plaintext_peer_links_for_benchmarks (loopback only): the cost
        # of TLS on peer links is the difference to the default (encrypted) daemons.
        self.plaintext = plaintext
        self.env = child_env(work)
        if net.lab:
            # namespaces are not loopback: plain TCP to the tracker must be allowed explicitly
            # (env vars, so binaries from before that check still start)
            self.env.update(MINITORRD_ALLOW_PLAINTEXT="1", TRACKERD_ALLOW_PLAINTEXT="1")
        (work / "xdg-config").mkdir(parents=True, exist_ok=True)
        self.daemons: list[Daemon] = []
        self.log_level = log_level
        self.next_port = 7000
        tport = net.port(5600)
        self.tracker_addr = f"{net.ip(tracker_host)}:{tport}"
        tdir = work / "tracker"
        tdir.mkdir(parents=True)
        self.tracker = spawn(
            [*net.prefix(tracker_host), bins / "trackerd", "--listen", self.tracker_addr,
             "--state-dir", tdir], work / "trackerd.log", self.env)
        if not net.lab:
            def up():
                try:
                    socket.create_connection(("127.0.0.1", tport), 0.2).close()
                    return True
                except OSError:
                    return False
            wait_for("trackerd", up)
        self.owner: Daemon | None = None
        self.groups: set[str] = set()

    def start_daemon(self, name: str, host: int = 1) -> Daemon:
        d = self.work / name
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)  # minitorrd refuses a control-socket directory others can enter
        sock = d / "ctl.sock"
        self.next_port += 1
        addr = f"{self.net.ip(host)}:{self.net.port(self.next_port)}"
        cmd = [*self.net.prefix(host), self.bins / "minitorrd", "--socket", sock,
               "--state-dir", d / "state", "--tracker", self.tracker_addr]
        conf = ""
        # MT_BENCH_LOG_LEVEL overrides the daemons' log level (e.g. tracing a swarm run).
        level = os.environ.get("MT_BENCH_LOG_LEVEL") or self.log_level
        if level:
            conf += f'log_level = "{level}"\n'
        if self.plaintext:
            conf += "insecure_plaintext_peer_links_for_benchmarks = true\n"
        if conf:
            (d / "minitorrd.toml").write_text(conf)
            cmd += ["--config", d / "minitorrd.toml"]
        p = spawn([*cmd, addr], d / "minitorrd.log", self.env)
        wait_for(f"{name} control socket", lambda: sock.exists() or p.poll() is not None)
        if p.poll() is not None:
            raise RuntimeError(f"minitorrd {name} exited: {(d / 'minitorrd.log').read_text()[-2000:]}")
        dm = Daemon(name, d, sock, p, addr)
        self.daemons.append(dm)
        return dm

    def ctl(self, d: Daemon, *args, timeout=600):
        cmd = [self.bins / "minitorrctl", "--socket", d.sock, "--json", *args]
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                           env=self.env, timeout=timeout, stdin=subprocess.DEVNULL)
        try:
            doc = json.loads(r.stdout)
        except json.JSONDecodeError:
            doc = {"raw": r.stdout, "stderr": r.stderr}
        if r.returncode != 0:
            raise CtlError(args, doc, r.returncode)
        return doc

    def join(self, d: Daemon, groups: list[str]):
        """Register and log in `d` (user = its name), make it a member of `groups`."""
        for attempt in range(100):  # the tracker may still be starting (netlab: no port probe)
            try:
                self.ctl(d, "create_user", d.name, "pw-" + d.name)
                break
            except CtlError as e:
                if "tracker" not in json.dumps(e.doc) or attempt == 99:
                    raise
                time.sleep(0.1)
        self.ctl(d, "login", d.name, "pw-" + d.name)
        if self.owner is None:
            self.owner = d
        for g in groups:
            if g not in self.groups:
                self.ctl(self.owner, "create_group", g)
                self.groups.add(g)
            if d is not self.owner:
                self.ctl(d, "join_group", g)
                self.ctl(self.owner, "accept_request", g, d.name)

    def stop_daemon(self, d: Daemon):
        try:
            self.ctl(d, "logout", timeout=10)  # so the tracker stops handing it out at once
        except Exception:  # noqa: BLE001
            pass
        stop(d.proc)
        self.daemons.remove(d)

    def shutdown(self):
        for d in list(self.daemons):
            stop(d.proc)
        stop(self.tracker)


def find_download(doc, group, name):
    for dl in doc.get("downloads", []):
        if dl["group"] == group and dl["file"] == name:
            return dl
    return None


def mt_download(cl: Cluster, name: str, host: int, group: str, fname: str, size: int,
                perf_out: Path | None = None, poll=0.05, timeout=600) -> dict:
    """One cold download by a fresh minitorrd: wall time, elapsed_ms, first_piece_ms, CPU, RSS."""
    d = cl.start_daemon(name, host)
    try:
        cl.join(d, [group])
        dest = d.dir / "in"
        dest.mkdir()
        perf = None
        if perf_out:
            perf = subprocess.Popen(["perf", "record", "-g", "-o", str(perf_out), "-p", str(d.pid)],
                                    stdout=subprocess.DEVNULL, stderr=open(d.dir / "perf.log", "wb"))
            time.sleep(0.5)
        cpu0, hwm0 = proc_cpu(d.pid), proc_status_kb(d.pid, "VmHWM")
        t0 = time.perf_counter()
        cl.ctl(d, "download_file", group, fname, dest)
        deadline = t0 + timeout
        while True:
            dl = find_download(cl.ctl(d, "show_downloads"), group, fname)
            if dl and dl["state"] == "complete":
                break
            if dl and dl["state"] == "failed":
                raise RuntimeError(f"download failed: {dl.get('error')}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"download timed out: {dl}")
            time.sleep(poll)
        wall = time.perf_counter() - t0
        cpu = proc_cpu(d.pid) - cpu0
        hwm = proc_status_kb(d.pid, "VmHWM")
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
        got = (dest / fname).stat().st_size
        if got != size or dl["bytes_done"] != size:
            raise RuntimeError(f"downloaded {got} bytes, bytes_done {dl['bytes_done']}, want {size}")
        return {
            "wall_s": wall,
            "elapsed_s": dl["elapsed_ms"] / 1000,
            "first_piece_s": None if dl["first_piece_ms"] is None else dl["first_piece_ms"] / 1000,
            "cpu_s": cpu,
            "peak_rss_mib": hwm / 1024,
            "rss_before_mib": hwm0 / 1024,
            "mbps": size * 8 / 1e6 / (dl["elapsed_ms"] / 1000),
            "peers": {p["user"]: p["bytes_received"] for p in dl["peers"]},
        }
    finally:
        cl.stop_daemon(d)
        shutil.rmtree(d.dir, ignore_errors=True)


# ---------------------------------------------------------------- libtorrent


class LtSwarm:
    """libtorrent seeders (seed mode, separate processes) on 127.0.0.1 and cold downloaders."""

    def __init__(self, work: Path, data: Path, n_seeders: int, env):
        self.work, self.env = work / "lt", env
        self.work.mkdir()
        self.torrent = self.work / "data.torrent"
        subprocess.run([LT_PYTHON, BENCH / "lt_peer.py", "make_torrent", str(data), str(self.torrent),
                        str(piece_size(data.stat().st_size))],
                       check=True, env=env)
        self.seeders, self.addrs = [], []
        for i in range(n_seeders):
            addr = f"127.0.0.1:{free_port()}"
            p = spawn([LT_PYTHON, BENCH / "lt_peer.py", "seed", self.torrent, data.parent, addr],
                      self.work / f"seed{i}.log", env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            line = p.stdout.readline().decode().strip()
            if line != "ready":
                raise RuntimeError(f"libtorrent seeder {i} failed: {(self.work / f'seed{i}.log').read_text()}")
            self.seeders.append(p)
            self.addrs.append(addr)

    def download(self, n_peers: int, tag: str) -> dict:
        dest = self.work / f"dl-{tag}"
        dest.mkdir()
        try:
            r = subprocess.run(
                [str(x) for x in [LT_PYTHON, BENCH / "lt_peer.py", "download", self.torrent, dest,
                                  f"127.0.0.1:{free_port()}", *self.addrs[:n_peers]]],
                capture_output=True, text=True, env=self.env, timeout=600)
            if r.returncode != 0:
                raise RuntimeError(f"libtorrent download failed: {r.stderr[-2000:]}")
            j = json.loads(r.stdout.strip().splitlines()[-1])
            j["mbps"] = j["bytes"] * 8 / 1e6 / j["elapsed_s"]
            j["peak_rss_mib"] = j["peak_rss_kb"] / 1024
            return j
        finally:
            shutil.rmtree(dest, ignore_errors=True)

    def shutdown(self):
        for p in self.seeders:
            stop(p)


def libtorrent_available() -> tuple[bool, str]:
    if not Path(LT_PYTHON).exists():
        return False, f"{LT_PYTHON} not found"
    r = subprocess.run([LT_PYTHON, str(BENCH / "lt_peer.py"), "version"], capture_output=True, text=True)
    if r.returncode == 0:
        return True, r.stdout.strip()
    log("python3-libtorrent missing; trying apt-get install -y python3-libtorrent")
    subprocess.run(["apt-get", "install", "-y", "python3-libtorrent"], capture_output=True)
    r = subprocess.run([LT_PYTHON, str(BENCH / "lt_peer.py"), "version"], capture_output=True, text=True)
    if r.returncode == 0:
        return True, r.stdout.strip()
    return False, "python3-libtorrent not importable by /usr/bin/python3 and apt-get install failed"


# ---------------------------------------------------------------- setup


def machine_info() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines()
                  if l.startswith("model name")), platform.processor())
    flags = next((l for l in cpuinfo.splitlines() if l.startswith("flags")), "")

    def git(*a):
        r = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.strip()

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "sha_ni": " sha_ni" in flags,
        "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30), 1),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": list(os.getloadavg()),
    }


def build(profile: str, want_examples: bool):
    cmd = ["cargo", "build", "--bins"] + (["--release"] if profile == "release" else [])
    log("building:", " ".join(cmd))
    subprocess.run(cmd, cwd=ROOT, check=True)
    if want_examples:
        # own target dir: the example's dev-dependencies would change feature unification and
        # rebuild the benchmarked binaries in target/release otherwise
        subprocess.run(["cargo", "build", "--release", "--example", "hash_file", "-p", "minitorrd",
                        "--target-dir", ROOT / "target" / "bench-example"], cwd=ROOT, check=True)
    tgt = ROOT / "target" / "bench-sha1"
    r = subprocess.run(["cargo", "build", "--release", "--offline", "--target-dir", tgt],
                       cwd=BENCH / "sha1-limit", capture_output=True, text=True)
    if r.returncode != 0:
        r = subprocess.run(["cargo", "build", "--release", "--target-dir", tgt],
                           cwd=BENCH / "sha1-limit", capture_output=True, text=True)
    if r.returncode != 0:
        log("sha1-limit did not build; the upload scenario falls back to python hashlib:", r.stderr[-500:])


def make_data(data_dir: Path, size: int, tag: str) -> Path:
    """A random file, written once (cached across runs in data_dir) and read into page cache."""
    d = data_dir / tag
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{tag}-{size}.bin"
    if not p.exists() or p.stat().st_size != size:
        log(f"writing {human(size)} of random data to {p}")
        tmp = p.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            left = size
            while left:
                n = min(left, 16 * MiB)
                f.write(os.urandom(n))
                left -= n
        tmp.rename(p)
    with open(p, "rb") as f:  # warm the page cache
        while f.read(16 * MiB):
            pass
    return p


def sha1_limit(path: Path) -> dict:
    exe = ROOT / "target" / "bench-sha1" / "release" / "sha1-limit"
    if exe.exists():
        r = subprocess.run([str(exe), str(path), "3"], capture_output=True, text=True, check=True)
        j = json.loads(r.stdout)
        j["method"] = "Rust sha1 0.10 (same crate as minitorrd), one thread (bench/sha1-limit)"
        return j
    import hashlib
    best_mem = best_file = float("inf")
    buf = os.urandom(64 * MiB)
    for _ in range(3):
        t = time.perf_counter()
        hashlib.sha1(buf).digest()
        best_mem = min(best_mem, time.perf_counter() - t)
        t = time.perf_counter()
        h = hashlib.sha1()
        with open(path, "rb") as f:
            while chunk := f.read(MiB):
                h.update(chunk)
        best_file = min(best_file, time.perf_counter() - t)
    size = path.stat().st_size
    return {"mem_gbps": len(buf) / best_mem / 1e9, "file_gbps": size / best_file / 1e9,
            "file_bytes": size, "file_secs": best_file,
            "method": "python hashlib (OpenSSL), one thread (sha1-limit not built)"}


def hash_file_example(path: Path) -> dict | None:
    exe = ROOT / "target" / "bench-example" / "release" / "examples" / "hash_file"
    if not exe.exists():
        return None
    r = subprocess.run([str(exe), str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    secs = [float(l.split()[0]) for l in r.stdout.splitlines() if l.strip()]
    return {"best_s": min(secs), "gbps": path.stat().st_size / min(secs) / 1e9}


# ---------------------------------------------------------------- scenarios


def scenario_upload_and_loopback(a, bins, work, data: Path, size: int, res: dict):
    """Scenarios 1, 2 and 4: one tracker and 3 seeders on 127.0.0.1."""
    cl = Cluster(bins, work / "loop", Net(False))
    try:
        seeders = [cl.start_daemon(f"s{i}") for i in range(1, 4)]
        cl.join(seeders[0], ["one", "three"])
        for s in seeders[1:]:
            cl.join(s, ["three"])

        # 1. upload_file: the first seeder shares the file in group "one" again and again (each
        # upload hashes the whole file), after one warm-up.
        log("upload_file ...")
        times = []
        for i in range(a.runs + a.warmup):
            t = time.perf_counter()
            doc = cl.ctl(seeders[0], "upload_file", data, "one")
            if i >= a.warmup:
                times.append(time.perf_counter() - t)
        assert doc["file"]["size"] == size, doc
        limit = sha1_limit(data)
        up = {"size": size, "upload_file_s": stats(times), "sha1_limit": limit,
              "sha1_limit_s": size / (limit["mem_gbps"] * 1e9),
              "hash_file_example": hash_file_example(data) if a.profile == "release" else None}
        up["ratio_vs_sha1_limit"] = ratio(up["upload_file_s"]["median"], up["sha1_limit_s"])
        up["upload_gbps"] = size / up["upload_file_s"]["median"] / 1e9
        res["upload"] = up

        for s in seeders:
            cl.ctl(s, "upload_file", data, "three")

        # The same 3 seeders with plaintext peer links, in their own cluster (a daemon is
        # either TLS or plaintext), for the side-by-side cost of encryption.
        plain = None
        if a.plaintext_compare:
            plain = Cluster(bins, work / "loop-plain", Net(False), plaintext=True)
            pseeders = [plain.start_daemon(f"p{i}") for i in range(1, 4)]
            plain.join(pseeders[0], ["one", "three"])
            for s in pseeders[1:]:
                plain.join(s, ["three"])
            plain.ctl(pseeders[0], "upload_file", data, "one")
            for s in pseeders:
                plain.ctl(s, "upload_file", data, "three")

        lt_swarm, lt_note = None, "skipped (--no-libtorrent / --quick)"
        if a.libtorrent:
            ok, why = libtorrent_available()
            if ok:
                lt_note = f"libtorrent {why} (python3-libtorrent), TCP only, tuned"
                lt_swarm = LtSwarm(work, data, 3, cl.env)
            else:
                lt_note = f"skipped: {why}"

        # 2. downloads, interleaved per round so machine noise hits every column alike; the
        # order rotates each round so no case always runs first after the previous round's
        # clean-up (one slow spell must not land on one column only).
        runs = {"minitorr_1": [], "minitorr_3": [], "plaintext_1": [], "plaintext_3": [],
                "libtorrent_1": [], "libtorrent_3": []}
        cases = [("minitorr_1", "one", 1), ("minitorr_3", "three", 3)]
        if plain:
            cases += [("plaintext_1", "one", 1), ("plaintext_3", "three", 3)]
        if lt_swarm:
            cases += [("libtorrent_1", None, 1), ("libtorrent_3", None, 3)]
        for rnd in range(a.loopback_runs + a.warmup):
            warm = rnd < a.warmup
            k = rnd % len(cases)
            for key, group, n in cases[k:] + cases[:k]:
                log(f"loopback round {rnd}{' (warm-up)' if warm else ''}: {key.split('_')[0]}, {n} seeder(s)")
                if group:
                    c = plain if key.startswith("plaintext") else cl
                    r = mt_download(c, f"d{rnd}{n}", 1, group, data.name, size)
                else:
                    r = lt_swarm.download(n, f"{rnd}-{n}")
                if not warm:
                    runs[key].append(r)
        if lt_swarm:
            lt_swarm.shutdown()
        if plain:
            plain.shutdown()

        lb = {"size": size, "libtorrent": lt_note}
        for key, rs in runs.items():
            if rs:
                lb[key] = {
                    "time_s": stats([r["elapsed_s"] for r in rs]),
                    "wall_s": stats([r.get("wall_s") for r in rs]),
                    "mbps": stats([r["mbps"] for r in rs]),
                    "first_piece_s": stats([r["first_piece_s"] for r in rs]),
                    "cpu_s": stats([r["cpu_s"] for r in rs]),
                    "peak_rss_mib": stats([r["peak_rss_mib"] for r in rs]),
                    "per_peer_bytes_last_run": rs[-1].get("peers"),
                }
        med = {k: lb[k]["time_s"]["median"] for k in runs if k in lb}
        lb["ratios"] = {
            "minitorr_vs_libtorrent_1_seeder": ratio(med.get("libtorrent_1"), med.get("minitorr_1")),
            "minitorr_vs_libtorrent_3_seeders": ratio(med.get("libtorrent_3"), med.get("minitorr_3")),
            "minitorr_3_vs_1_seeders_speedup": ratio(med.get("minitorr_1"), med.get("minitorr_3")),
            "libtorrent_3_vs_1_seeders_speedup": ratio(med.get("libtorrent_1"), med.get("libtorrent_3")),
            "plaintext_vs_libtorrent_1_seeder": ratio(med.get("libtorrent_1"), med.get("plaintext_1")),
            "plaintext_vs_libtorrent_3_seeders": ratio(med.get("libtorrent_3"), med.get("plaintext_3")),
            "tls_vs_plaintext_1_seeder": ratio(med.get("plaintext_1"), med.get("minitorr_1")),
            "tls_vs_plaintext_3_seeders": ratio(med.get("plaintext_3"), med.get("minitorr_3")),
        }
        # The same ratios round by round: each round's cases ran minutes apart at most, so
        # these show how steady a ratio is, not only its median.
        lb["ratios_per_round"] = {
            name: [ratio(b["elapsed_s"], a_["elapsed_s"]) for a_, b in zip(runs[x], runs[y])]
            for name, x, y in (("minitorr_vs_libtorrent_1_seeder", "minitorr_1", "libtorrent_1"),
                               ("minitorr_vs_libtorrent_3_seeders", "minitorr_3", "libtorrent_3"))
            if runs[x] and runs[y]
        }
        res["loopback"] = lb
        res["resources"] = {
            k: {
                "peak_rss_mib": lb[k]["peak_rss_mib"],
                "cpu_s": lb[k]["cpu_s"],
                "first_piece_ms": stats([None if r["first_piece_s"] is None else r["first_piece_s"] * 1000
                                         for r in runs[k]]),
                "cpu_s_per_gib": stats([r["cpu_s"] / (size / (1 << 30)) for r in runs[k]]),
            }
            for k in ("minitorr_1", "minitorr_3", "plaintext_1", "plaintext_3") if k in lb
        }

        # profile: one more 1-seeder download with perf attached to the downloader.
        if a.perf:
            res["profile"] = profile_download(a, cl, data, size)
    finally:
        cl.shutdown()


def profile_download(a, cl, data, size) -> dict:
    if not shutil.which("perf"):
        return {"skipped": "perf not installed (apt-get install linux-perf)"}
    out = a.out / "perf-1seeder.data"
    log("perf: profiling a 1-seeder loopback download")
    try:
        r = mt_download(cl, "dperf", 1, "one", data.name, size, perf_out=out)
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"perf run failed: {e}"}
    rep = subprocess.run(["perf", "report", "-i", str(out), "--stdio", "--no-children", "-g", "none",
                          "--percent-limit", "0.5", "--sort", "dso,symbol"],
                         capture_output=True, text=True)
    (a.out / "perf-1seeder.txt").write_text("\n".join(l.rstrip() for l in rep.stdout.splitlines()) + "\n")
    repg = subprocess.run(["perf", "report", "-i", str(out), "--stdio", "--no-children"],
                          capture_output=True, text=True)
    (a.out / "perf-1seeder-callgraph.txt").write_text(
        "\n".join(l.rstrip() for l in repg.stdout.splitlines()[:400]) + "\n")
    top = []
    for line in rep.stdout.splitlines():
        s = line.strip()
        if s.endswith("%") or not s or s.startswith("#") or "%" not in s:
            continue
        parts = re.split(r"\s{2,}", s)  # "42.16%  [kernel.kallsyms]  [k] symbol   -   -"
        if len(parts) >= 3 and parts[0].endswith("%"):
            top.append({"pct": float(parts[0].rstrip("%")), "dso": parts[1],
                        "symbol": re.sub(r"^\[.\]\s*", "", parts[2]).strip()})
    out.unlink(missing_ok=True)
    return {"download_s": r["elapsed_s"], "top": top[:25],
            "report": "perf-1seeder.txt (flat), perf-1seeder-callgraph.txt (first 400 lines)"}


def scenario_netlab(a, bins, work, data_dir, res: dict):
    if not a.netlab:
        res["netlab"] = {"skipped": "--no-netlab / --quick"}
        return
    if os.geteuid() != 0:
        res["netlab"] = {"skipped": "needs root (network namespaces)"}
        return
    size = a.netlab_size
    data = make_data(data_dir, size, "netlab")
    netlab_up(5, a.netlab_rate)
    cl = Cluster(bins, work / "lab", Net(True), tracker_host=1)
    try:
        seeders = [cl.start_daemon(f"s{i}", host=1 + i) for i in range(1, 4)]
        cl.join(seeders[0], ["one", "three"])
        for s in seeders[1:]:
            cl.join(s, ["three"])
        cl.ctl(seeders[0], "upload_file", data, "one")
        for s in seeders:
            cl.ctl(s, "upload_file", data, "three")
        runs = {1: [], 3: []}
        for rnd in range(a.netlab_runs + a.warmup):
            for n, group in ((1, "one"), (3, "three")):
                log(f"netlab round {rnd}: {n} seeder(s)")
                r = mt_download(cl, f"d{rnd}{n}", 5, group, data.name, size)
                if rnd >= a.warmup:
                    runs[n].append(r)
        nl = {"size": size, "rate_per_seeder": a.netlab_rate,
              "hosts": "10.77.0.1 tracker, .2-.4 seeders, .5 downloader"}
        for n, rs in runs.items():
            nl[f"minitorr_{n}"] = {
                "time_s": stats([r["elapsed_s"] for r in rs]),
                "mbps": stats([r["mbps"] for r in rs]),
                "per_peer_bytes_last_run": rs[-1]["peers"],
            }
        cap = parse_rate_mbit(a.netlab_rate)
        m1, m3 = nl["minitorr_1"]["mbps"]["median"], nl["minitorr_3"]["mbps"]["median"]
        nl["ratios"] = {"speedup_3_vs_1": ratio(m3, m1),
                        "fraction_of_cap_1": ratio(m1, cap), "fraction_of_cap_3": ratio(m3, 3 * cap)}
        res["netlab"] = nl
    finally:
        cl.shutdown()
        netlab_down()


def parse_rate_mbit(rate: str) -> float | None:
    r = rate.lower()
    for suf, mul in (("gbit", 1000), ("mbit", 1), ("kbit", 0.001)):
        if r.endswith(suf):
            return float(r[: -len(suf)]) * mul
    return None


def scenario_many_peers(a, bins, work, data_dir, res: dict):
    """Scenario 5: grow from N1 to N2 seeders (each with a few small files), fetch a file held
    by every seeder, time list_files over the whole group."""
    counts = a.many_seeders
    size = a.many_size
    cl = Cluster(bins, work / "many", Net(False))
    rows = []
    pool = cf.ThreadPoolExecutor(8)
    try:
        files_dir = work / "many" / "files"
        files_dir.mkdir(parents=True)
        seeders: list[Daemon] = []
        for n in counts:
            log(f"many_peers: {n} seeders, {a.small_files} small files each")
            t_setup = time.perf_counter()
            new = [cl.start_daemon(f"m{i}") for i in range(len(seeders), n)]
            if cl.owner is None:
                cl.join(new[0], ["many"])
                rest = new[1:]
            else:
                rest = new
            list(pool.map(lambda d: cl.join(d, ["many"]), rest))
            seeders += new
            big = make_data(data_dir, size, f"many{n}")

            def share(d: Daemon):
                for j in range(a.small_files):
                    p = files_dir / f"{d.name}-{j}.bin"
                    p.write_bytes(os.urandom(4096 + (hash((d.name, j)) % 60000)))
                    cl.ctl(d, "upload_file", p, "many")

            list(pool.map(share, new))
            list(pool.map(lambda d: cl.ctl(d, "upload_file", big, "many"), seeders))
            setup_s = time.perf_counter() - t_setup
            lf = []
            for _ in range(5):
                t = time.perf_counter()
                doc = cl.ctl(cl.owner, "list_files", "many")
                lf.append(time.perf_counter() - t)
            nfiles = len(doc["files"])
            held = next(f for f in doc["files"] if f["name"] == big.name)
            dls = []
            for rnd in range(a.runs + a.warmup):
                r = mt_download(cl, f"md{n}-{rnd}", 1, "many", big.name, size)
                if rnd >= a.warmup:
                    dls.append(r)
            rows.append({
                "seeders": n, "files_in_group": nfiles, "seeders_online": held["seeders_online"],
                "setup_s": setup_s,
                "list_files_s": stats(lf),
                "download_s": stats([r["elapsed_s"] for r in dls]),
                "download_cpu_s": stats([r["cpu_s"] for r in dls]),
                "download_peak_rss_mib": stats([r["peak_rss_mib"] for r in dls]),
                "first_piece_s": stats([r["first_piece_s"] for r in dls]),
                "peers_used_last_run": len([v for v in dls[-1]["peers"].values() if v > 0]),
                "peers_listed_last_run": len(dls[-1]["peers"]),
            })
        mp = {"size": size, "small_files_per_seeder": a.small_files, "rows": rows}
        if len(rows) >= 2:
            f, l = rows[0], rows[-1]
            mp["growth"] = {
                "seeders": l["seeders"] / f["seeders"],
                "download_time": ratio(l["download_s"]["median"], f["download_s"]["median"]),
                "download_cpu": ratio(l["download_cpu_s"]["median"], f["download_cpu_s"]["median"]),
                "list_files_time": ratio(l["list_files_s"]["median"], f["list_files_s"]["median"]),
            }
        res["many_peers"] = mp
    finally:
        pool.shutdown()
        cl.shutdown()


# ---------------------------------------------------------------- swarm and wan (namespaces)

LT_PORT = 6881
SWARM_TRACKER_HOST, SWARM_SEEDER_HOST = 1, 2


def need_lab(name: str, a) -> str | None:
    """Why scenario `name` cannot run here (None: it can). Asked for by --only, that is fatal."""
    why = None
    if os.geteuid() != 0:
        why = "needs root (network namespaces, raw packet sockets for mt-netem)"
    elif not shutil.which("ip"):
        why = "needs iproute2 (ip)"
    if why and name in a.only_set:
        sys.exit(f"bench: scenario {name} {why}")
    return why


def ideal_last_finish_s(size: int, u_seed_bps: float, u_leech_bps: float, starts: list[float]) -> float:
    """Lower bound on the last finish, counted from the first start, when every host's upload is
    capped and downloads are not: max(F/u_s, T*, max_k t_k + F/(u_s + (N-1)·u_l)), where T*
    is when the upload capacity that existed so far, u_s·T + u_l·Σ max(0, T - t_k), reaches
    N·F. With every t_k = 0 this is max(F/u_s, N·F/(u_s + N·u_l)), the issue's bound."""
    F, n = size * 8, len(starts)

    def capacity(T):
        return u_seed_bps * T + u_leech_bps * sum(max(0.0, T - t) for t in starts)

    lo, hi = 0.0, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if capacity(mid) < n * F else (lo, mid)
    last = max(t + F / (u_seed_bps + (n - 1) * u_leech_bps) for t in starts)
    return max(F / u_seed_bps, hi, last)


def mt_swarm_case(cl: Cluster, seeder: Daemon, tag: str, hosts: list[int], group: str,
                  fname: str, size: int, starts: list[float], pool, seeder_host: int) -> dict:
    """Fresh minitorrd leechers on `hosts`, each runs `download_file --wait` at its start time."""
    ds = [cl.start_daemon(f"{tag}l{k}", h) for k, h in enumerate(hosts)]
    try:
        list(pool.map(lambda d: cl.join(d, [group]), ds))
        for d in ds:
            (d.dir / "in").mkdir()
        tx0 = lab.tx_bytes(seeder_host)
        t0 = time.perf_counter()

        def run(k):
            d = ds[k]
            wait = t0 + starts[k] - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            ts = time.perf_counter()
            doc = cl.ctl(d, "download_file", group, fname, d.dir / "in", "--wait", timeout=900)
            te = time.perf_counter()
            return ts - t0, te - t0, doc["download"]

        outs = list(pool.map(run, range(len(ds))))
        tx1 = lab.tx_bytes(seeder_host)
        got_seed = got_all = 0
        per_leecher = []  # payload bytes each leecher got from the seeder (the seeder's split)
        for (_, _, dl), d in zip(outs, ds):
            if dl["state"] != "complete" or (d.dir / "in" / fname).stat().st_size != size:
                raise RuntimeError(f"{d.name}: download not complete: {dl}")
            mine = 0
            for p in dl["peers"]:
                got_all += p["bytes_received"]
                if p["user"] == seeder.name:
                    got_seed += p["bytes_received"]
                    mine += p["bytes_received"]
            per_leecher.append(mine)
        return {"start_s": [o[0] for o in outs], "end_s": [o[1] for o in outs],
                "from_seeder": ratio(got_seed, got_all), "seeder_tx_bytes": tx1 - tx0,
                "seeder_bytes_per_leecher": per_leecher}
    finally:
        list(pool.map(cl.stop_daemon, ds))
        for d in ds:
            if KEEP_LOGS:  # --keep: the leechers' logs stay, for per-connection analysis
                for f in d.dir.glob("*.log"):
                    shutil.copy(f, cl.work / f"{d.name}-{f.name}")
            shutil.rmtree(d.dir, ignore_errors=True)


def lt_swarm_case(work: Path, torrent: Path, tag: str, hosts: list[int], size: int,
                  starts: list[float], pool, env, seeder_host: int) -> dict:
    """libtorrent leechers (bench/lt_peer.py swarm) on `hosts`: sessions up first, then each is
    told "go" at its start time and connects to the seeder and every other leecher."""
    addrs = [f"{lab.addr(h)}:{LT_PORT}" for h in hosts]
    seed_addr = f"{lab.addr(seeder_host)}:{LT_PORT}"
    procs, dirs = [], []
    try:
        for k, h in enumerate(hosts):
            dest = work / f"lt-{tag}-{k}"
            dest.mkdir(parents=True)
            dirs.append(dest)
            others = [seed_addr] + [x for j, x in enumerate(addrs) if j != k]
            procs.append(spawn([*lab.exec_prefix(h), LT_PYTHON, BENCH / "lt_peer.py", "swarm", torrent, dest,
                                addrs[k], *others], work / f"lt-{tag}-{k}.log", env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        for k, p in enumerate(procs):
            if p.stdout.readline().decode().strip() != "ready":
                raise RuntimeError(f"libtorrent leecher {k}: {(work / f'lt-{tag}-{k}.log').read_text()[-1500:]}")
        tx0 = lab.tx_bytes(seeder_host)
        t0 = time.perf_counter()

        def run(k):
            wait = t0 + starts[k] - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            ts = time.perf_counter()
            procs[k].stdin.write(b"go\n")
            procs[k].stdin.flush()
            line = procs[k].stdout.readline().decode()
            te = time.perf_counter()
            if not line.strip():
                raise RuntimeError(f"libtorrent leecher {k} failed: {(work / f'lt-{tag}-{k}.log').read_text()[-1500:]}")
            return ts - t0, te - t0, json.loads(line)

        outs = list(pool.map(run, range(len(procs))))
        tx1 = lab.tx_bytes(seeder_host)
        seed_ip = lab.addr(seeder_host)
        got_seed = sum(o[2]["peers_bytes"].get(seed_ip, 0) for o in outs)
        got_all = sum(sum(o[2]["peers_bytes"].values()) for o in outs)
        for _, _, j in outs:
            if j["total_done"] != size:
                raise RuntimeError(f"libtorrent leecher finished with {j['total_done']} of {size} bytes")
        return {"start_s": [o[0] for o in outs], "end_s": [o[1] for o in outs],
                "from_seeder": ratio(got_seed, got_all), "seeder_tx_bytes": tx1 - tx0}
    finally:
        for p in procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in procs:
            stop(p)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def swarm_summary(r: dict, size: int, ideal: float) -> dict:
    durations = [e - s for s, e in zip(r["start_s"], r["end_s"])]
    last = max(r["end_s"])
    out = {"last_finish_s": last, "ratio_to_ideal": last / ideal,
           "per_leecher_s": stats(durations), "from_seeder": r["from_seeder"],
           "seeder_tx_bytes": r["seeder_tx_bytes"], "seeder_upload_x_file": r["seeder_tx_bytes"] / size}
    if r.get("seeder_bytes_per_leecher"):
        out["seeder_mib_per_leecher"] = stats([b / (1 << 20) for b in r["seeder_bytes_per_leecher"]])
    return out


def scenario_swarm(a, bins, work, data_dir, res: dict):
    """1 seeder + N leechers, every host's upload capped (tbf), Minitorr vs libtorrent."""
    why = need_lab("swarm", a)
    if why:
        res["swarm"] = {"skipped": why}
        return
    size = a.swarm_size
    data = make_data(data_dir, size, "swarm")
    rate_bps = parse_rate_mbit(a.swarm_rate) * 1e6
    cases = [(n, 0.0) for n in a.swarm_leechers] + [(n, iv) for n, iv in a.swarm_stagger]
    nmax = max(n for n, _ in cases)
    lt_ok, lt_note = (libtorrent_available() if not a.lt_off else (False, "--no-libtorrent"))
    netlab_up(nmax + 2, a.swarm_rate)
    cl = Cluster(bins, work / "swarm", Net(True), tracker_host=SWARM_TRACKER_HOST)
    pool = cf.ThreadPoolExecutor(nmax + 2)
    lt_seed = None
    out = {"size": size, "rate": a.swarm_rate, "runs": a.swarm_runs,
           "hosts": f"10.77.0.{SWARM_TRACKER_HOST} tracker, .{SWARM_SEEDER_HOST} seeder, .3-.{nmax + 2} leechers; "
                    f"every host's egress capped at {a.swarm_rate} (tbf)",
           "libtorrent": f"libtorrent {lt_note} (python3-libtorrent), TCP only, tuned as on loopback; each "
                         f"leecher is handed the seeder and every other leecher, as a tracker would"
                         if lt_ok else f"skipped: {lt_note}",
           "cases": []}
    try:
        seeder = cl.start_daemon("seed", SWARM_SEEDER_HOST)
        cl.join(seeder, ["swarm"])
        check_piece_size(cl.ctl(seeder, "upload_file", data, "swarm"), size)
        if lt_ok:
            torrent = work / "swarm.torrent"
            subprocess.run([LT_PYTHON, BENCH / "lt_peer.py", "make_torrent", str(data), str(torrent),
                            str(piece_size(size))],
                           check=True, env=cl.env)
            lt_seed = spawn([*lab.exec_prefix(SWARM_SEEDER_HOST), LT_PYTHON, BENCH / "lt_peer.py", "seed", torrent,
                             data.parent, f"{lab.addr(SWARM_SEEDER_HOST)}:{LT_PORT}"], work / "lt-seed.log", cl.env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            if lt_seed.stdout.readline().decode().strip() != "ready":
                raise RuntimeError(f"libtorrent seeder: {(work / 'lt-seed.log').read_text()[-1500:]}")
        for ci, (n, iv) in enumerate(cases):
            starts = [k * iv for k in range(n)]
            ideal = ideal_last_finish_s(size, rate_bps, rate_bps, starts)
            hosts = list(range(3, 3 + n))
            row = {"leechers": n, "join_interval_s": iv, "ideal_s": ideal, "minitorr": [], "libtorrent": []}
            for run in range(a.swarm_runs):
                engines = ["minitorr"] + (["libtorrent"] if lt_ok else [])
                if run % 2:
                    engines.reverse()
                for eng in engines:
                    label = f"{n} leechers" + (f", one every {iv:g} s" if iv else " together")
                    log(f"swarm: {label}, {eng}, run {run + 1}/{a.swarm_runs}")
                    if eng == "minitorr":
                        r = mt_swarm_case(cl, seeder, f"c{ci}r{run}", hosts, "swarm", data.name, size,
                                          starts, pool, SWARM_SEEDER_HOST)
                    else:
                        r = lt_swarm_case(work / "lt", torrent, f"c{ci}r{run}", hosts, size, starts, pool,
                                          cl.env, SWARM_SEEDER_HOST)
                    s = swarm_summary(r, size, ideal)
                    split = s.get("seeder_mib_per_leecher")
                    log(f"  last finish {s['last_finish_s']:.1f} s = {s['ratio_to_ideal']:.2f}× ideal "
                        f"({ideal:.1f} s), {fmt((s['from_seeder'] or 0) * 100, ' %', 0)} from the seeder, "
                        f"seeder sent {s['seeder_upload_x_file']:.2f} × F"
                        + (f", per leecher from the seeder {split['min']:.1f}–{split['max']:.1f} MiB" if split else ""))
                    row[eng].append(s)
            out["cases"].append(row)
        res["swarm"] = out
    finally:
        if lt_seed:
            stop(lt_seed)
        pool.shutdown()
        cl.shutdown()
        netlab_down()


def wan_download_minitorr(cl: Cluster, name: str, host: int, group: str, fname: str, size: int) -> float:
    d = cl.start_daemon(name, host)
    try:
        cl.join(d, [group])
        (d.dir / "in").mkdir()
        t = time.perf_counter()
        doc = cl.ctl(d, "download_file", group, fname, d.dir / "in", "--wait", timeout=900)
        wall = time.perf_counter() - t
        if doc["download"]["state"] != "complete" or (d.dir / "in" / fname).stat().st_size != size:
            raise RuntimeError(f"download not complete: {doc}")
        return wall
    finally:
        cl.stop_daemon(d)
        shutil.rmtree(d.dir, ignore_errors=True)


def scenario_wan(a, bins, work, data_dir, res: dict):
    """1 seeder, 1 downloader behind an emulated long link (mt-netem): Minitorr vs libtorrent vs
    one TCP stream of the same size through the same link."""
    why = need_lab("wan", a)
    if why:
        res["wan"] = {"skipped": why}
        return
    size = a.wan_size
    data = make_data(data_dir, size, "wan")
    lt_ok, lt_note = (libtorrent_available() if not a.lt_off else (False, "--no-libtorrent"))
    torrent = work / "wan.torrent"
    if lt_ok:
        subprocess.run([LT_PYTHON, BENCH / "lt_peer.py", "make_torrent", str(data), str(torrent),
                        str(piece_size(size))],
                       check=True)
    seeder_host, dl_host = 2, 3
    out = {"size": size, "runs": a.wan_runs,
           "hosts": "10.77.0.1 tracker, .2 seeder, .3 downloader behind mt-netem (delay and loss each way, "
                    "no rate cap)",
           "libtorrent": f"libtorrent {lt_note}, TCP only, tuned as on loopback" if lt_ok else f"skipped: {lt_note}",
           "tcp_sysctls": {k: Path(f"/proc/sys/net/ipv4/{k}").read_text().split()
                           for k in ("tcp_rmem", "tcp_wmem", "tcp_congestion_control")},
           "rows": []}
    if shutil.which("ping") is None:  # the link check below pings through the emulator
        raise RuntimeError("the wan scenario needs ping (Debian: apt-get install iputils-ping)")
    for loss in a.wan_loss:
        for delay in a.wan_delays:
            tag = f"{delay:g}ms-{loss}"
            netlab_up(3, None, {dl_host: {"delay": delay, "loss": loss}})
            cl = Cluster(bins, work / f"wan-{tag}", Net(True), tracker_host=1)
            lt_seed = None
            try:
                # the link first: its RTT must be 2 × delay, else nothing below means anything
                pg = lab.ping(seeder_host, dl_host, 5, 0.2)
                if pg["rtt_min_ms"] is None or abs(pg["rtt_min_ms"] - 2 * delay) > 2 + 0.05 * delay:
                    raise RuntimeError(f"emulated link broken: ping {pg} for 2 × {delay} ms")
                seeder = cl.start_daemon("seed", seeder_host)
                cl.join(seeder, ["wan"])
                check_piece_size(cl.ctl(seeder, "upload_file", data, "wan"), size)
                if lt_ok:
                    lt_seed = spawn([*lab.exec_prefix(seeder_host), LT_PYTHON, BENCH / "lt_peer.py", "seed",
                                     torrent, data.parent, f"{lab.addr(seeder_host)}:{LT_PORT}"],
                                    work / f"lt-seed-{tag}.log", cl.env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE)
                    if lt_seed.stdout.readline().decode().strip() != "ready":
                        raise RuntimeError("libtorrent seeder did not start")
                row = {"delay_ms": delay, "loss": loss, "ping_rtt_ms": pg["rtt_avg_ms"],
                       "tcp_s": [], "minitorr_s": [], "libtorrent_s": []}
                for run in range(a.wan_runs):
                    log(f"wan: {delay:g} ms each way, loss {loss}, run {run + 1}/{a.wan_runs}: one TCP stream")
                    row["tcp_s"].append(lab.tcp_stream(seeder_host, dl_host, nbytes=size)["seconds"])
                    log(f"  {row['tcp_s'][-1]:.1f} s; minitorr")
                    row["minitorr_s"].append(wan_download_minitorr(cl, f"d{run}", dl_host, "wan", data.name, size))
                    log(f"  {row['minitorr_s'][-1]:.1f} s")
                    if lt_ok:
                        r = lt_swarm_case(work / "lt", torrent, f"{tag}-{run}", [dl_host], size, [0.0],
                                          cf.ThreadPoolExecutor(1), cl.env, seeder_host)
                        row["libtorrent_s"].append(r["end_s"][0] - r["start_s"][0])
                        log(f"  libtorrent {row['libtorrent_s'][-1]:.1f} s")
                row["netem"] = lab.netem_stats(dl_host)
                for k in ("tcp_s", "minitorr_s", "libtorrent_s"):
                    row[k] = stats(row[k])
                med = {k: row[k]["median"] for k in ("tcp_s", "minitorr_s", "libtorrent_s")}
                row["mbit_s"] = {k[:-2]: (size * 8 / 1e6 / v if v else None) for k, v in med.items()}
                row["minitorr_vs_tcp"] = ratio(med["tcp_s"], med["minitorr_s"])
                row["minitorr_vs_libtorrent"] = ratio(med["libtorrent_s"], med["minitorr_s"])
                out["rows"].append(row)
            finally:
                if lt_seed:
                    stop(lt_seed)
                cl.shutdown()
                netlab_down()
    res["wan"] = out


def scenario_netem_check(a, res: dict):
    why = need_lab("netem_check", a)
    if why:
        res["netem_check"] = {"skipped": why}
        return
    log("netem_check: the emulator's self-check (bench/lab.py check)")
    global NETLAB_UP
    NETLAB_UP = True
    try:
        r = lab.check(log=lambda *m: log(*m))
    finally:
        netlab_down()
    res["netem_check"] = r
    if not r["ok"]:
        raise RuntimeError("the link emulator failed its self-check (see above)")


# ---------------------------------------------------------------- report


def fmt(v, unit="", nd=2):
    if v is None:
        return "–"
    return f"{v:.{nd}f}{unit}"


def cell(st, unit="", nd=2, mul=1.0):
    if not st or st.get("median") is None:
        return "–"
    return (f"{st['median'] * mul:.{nd}f}{unit} ({st['min'] * mul:.{nd}f}–{st['max'] * mul:.{nd}f})"
            if st["n"] > 1 else f"{st['median'] * mul:.{nd}f}{unit}")


def markdown(r: dict) -> str:
    m, s = r["meta"], r["scenarios"]
    L = [f"# Minitorr benchmark — {m['date']}", "",
         f"- machine: {m['nproc']} cores, {m['cpu_model']}, kernel {m['kernel']}, "
         f"SHA-NI {'yes' if m['sha_ni'] else 'no'}, {m['mem_total_gib']} GiB RAM",
         f"- commit {m['git_commit'][:12]}{' (dirty)' if m['git_dirty'] else ''}, profile `{m['profile']}`",
         f"- load average at start {m['loadavg_start']}, at end {m.get('loadavg_end')}",
         f"- command: `{m['command']}`; median (min–max) of {m['runs']} run(s) after {m['warmup']} warm-up"
         f" ({m.get('loopback_runs', m['runs'])} rounds for the loopback downloads)",
         *([f"- **background load: {m['background_load']} busy-looping process(es) ran throughout**"]
           if m.get("background_load") else []),
         f"- total bench time {fmt(m.get('total_s'), ' s', 0)}", ""]
    up = s.get("upload")
    if up:
        L += ["## 1. upload_file (hash + register)", "",
              "| size | upload_file | single-core SHA1 limit | upload / limit | our hasher alone (hash_file example) |",
              "|---|---|---|---|---|",
              f"| {human(up['size'])} | {cell(up['upload_file_s'], ' s', 3)} | "
              f"{fmt(up['sha1_limit_s'], ' s', 3)} ({up['sha1_limit']['mem_gbps']:.2f} GB/s in memory; "
              f"{up['sha1_limit']['file_gbps']:.2f} GB/s read+hash) | {fmt(up['ratio_vs_sha1_limit'], '×')} | "
              f"{fmt((up.get('hash_file_example') or {}).get('best_s'), ' s', 3)} |", "",
              f"SHA1 limit measured with: {up['sha1_limit']['method']}.", ""]
    lb = s.get("loopback")
    if lb:
        L += [f"## 2. Download {human(lb['size'])} on 127.0.0.1", "",
              f"libtorrent: {lb['libtorrent']}.", "",
              "| engine | seeders | time (s) | MB/s | first piece (ms) | downloader CPU (s) | downloader peak RSS (MiB) |",
              "|---|---|---|---|---|---|---|"]
        names = {"minitorr": "minitorr (TLS)", "plaintext": "minitorr (plaintext)", "libtorrent": "libtorrent"}
        for key in ("minitorr_1", "plaintext_1", "libtorrent_1", "minitorr_3", "plaintext_3", "libtorrent_3"):
            if key in lb:
                e = lb[key]
                eng, n = key.split("_")
                eng = names[eng]
                L.append(f"| {eng} | {n} | {cell(e['time_s'], '', 2)} | "
                         f"{cell(e['mbps'], '', 0, 1 / 8)} | {cell(e['first_piece_s'], '', 0, 1000)} | "
                         f"{cell(e['cpu_s'], '', 2)} | {cell(e['peak_rss_mib'], '', 0)} |")
        rt = lb["ratios"]
        L += ["", "| ratio | value | target |", "|---|---|---|",
              f"| minitorr (TLS) vs libtorrent throughput, 1 seeder | {fmt(rt['minitorr_vs_libtorrent_1_seeder'], '×')} | ≥ 1.3× |",
              f"| minitorr (TLS) vs libtorrent throughput, 3 seeders | {fmt(rt['minitorr_vs_libtorrent_3_seeders'], '×')} | ≥ 1.5× |",
              f"| minitorr (plaintext) vs libtorrent throughput, 1 seeder | {fmt(rt.get('plaintext_vs_libtorrent_1_seeder'), '×')} | |",
              f"| minitorr (plaintext) vs libtorrent throughput, 3 seeders | {fmt(rt.get('plaintext_vs_libtorrent_3_seeders'), '×')} | |",
              f"| TLS vs plaintext throughput, 1 seeder | {fmt(rt.get('tls_vs_plaintext_1_seeder'), '×')} | |",
              f"| TLS vs plaintext throughput, 3 seeders | {fmt(rt.get('tls_vs_plaintext_3_seeders'), '×')} | |",
              f"| minitorr 3 seeders vs 1 (speed-up) | {fmt(rt['minitorr_3_vs_1_seeders_speedup'], '×')} | ≥ 0.95× |",
              f"| libtorrent 3 seeders vs 1 (speed-up) | {fmt(rt['libtorrent_3_vs_1_seeders_speedup'], '×')} | |",
              *([""] + [f"Per round, {k.replace('_', ' ')}: " + ", ".join(fmt(v, '×') for v in vs)
                        for k, vs in lb.get("ratios_per_round", {}).items()]),
              "", "Time: minitorr `elapsed_ms` from `show_downloads`; libtorrent add_torrent → "
              "torrent_finished. Wall time incl. control socket round trips and 50 ms polling: "
              + ", ".join(f"{k} {cell(lb[k]['wall_s'], ' s', 2)}" for k in ("minitorr_1", "minitorr_3") if k in lb),
              ""]
    nl = s.get("netlab")
    if nl:
        L += ["## 3. Network namespaces (netlab)", ""]
        if "skipped" in nl:
            L += [f"Skipped: {nl['skipped']}.", ""]
        else:
            L += [f"{human(nl['size'])}, each host's egress capped at {nl['rate_per_seeder']} ({nl['hosts']}).", "",
                  "| seeders | time (s) | aggregate Mbit/s |", "|---|---|---|",
                  f"| 1 | {cell(nl['minitorr_1']['time_s'])} | {cell(nl['minitorr_1']['mbps'], '', 0)} |",
                  f"| 3 | {cell(nl['minitorr_3']['time_s'])} | {cell(nl['minitorr_3']['mbps'], '', 0)} |", "",
                  f"Speed-up 3 vs 1: {fmt(nl['ratios']['speedup_3_vs_1'], '×')} (target ≥ 2.7×); "
                  f"3 seeders reach {fmt((nl['ratios']['fraction_of_cap_3'] or 0) * 100, ' %', 0)} of 3 × cap "
                  f"(target ≥ 90 %); 1 seeder {fmt((nl['ratios']['fraction_of_cap_1'] or 0) * 100, ' %', 0)} of its cap.", ""]
    rs = s.get("resources")
    if rs:
        L += ["## 4. Downloading minitorrd: memory, CPU, first piece (loopback runs above)", "",
              "| peer links | seeders | peak RSS (MiB) | CPU (s) | CPU s per GiB | first piece (ms) |", "|---|---|---|---|---|---|"]
        for k, v in rs.items():
            link = "plaintext" if k.startswith("plaintext") else "TLS"
            L.append(f"| {link} | {k.split('_')[1]} | {cell(v['peak_rss_mib'], '', 0)} | {cell(v['cpu_s'])} | "
                     f"{cell(v['cpu_s_per_gib'])} | {cell(v['first_piece_ms'], '', 0)} |")
        L += ["", "Targets: peak RSS ≤ 64 MiB; first piece ≤ 50 ms.", ""]
    mp = s.get("many_peers")
    if mp:
        L += [f"## 5. Many peers, many small files ({human(mp['size'])} file held by every seeder, "
              f"{mp['small_files_per_seeder']} small files per seeder)", "",
              "| seeders | files in group | list_files (s) | download (s) | downloader CPU (s) | first piece (ms) | peers used | setup (s) |",
              "|---|---|---|---|---|---|---|---|"]
        for row in mp["rows"]:
            L.append(f"| {row['seeders']} | {row['files_in_group']} | {cell(row['list_files_s'], '', 3)} | "
                     f"{cell(row['download_s'])} | {cell(row['download_cpu_s'])} | "
                     f"{cell(row['first_piece_s'], '', 0, 1000)} | {row['peers_used_last_run']}/{row['peers_listed_last_run']} | "
                     f"{row['setup_s']:.1f} |")
        if "growth" in mp:
            g = mp["growth"]
            L += ["", f"Growth for {g['seeders']:g}× seeders/files: download time {fmt(g['download_time'], '×')}, "
                      f"downloader CPU {fmt(g['download_cpu'], '×')}, list_files {fmt(g['list_files_time'], '×')}."]
        L += [""]
    L += markdown_lab(s)
    L += markdown_tree(s)
    pf = s.get("profile")
    if pf:
        L += ["## Profile: downloading minitorrd, 1 seeder, loopback (perf, self time)", ""]
        if "skipped" in pf:
            L += [f"Skipped: {pf['skipped']}.", ""]
        else:
            L += [f"Download under perf took {pf['download_s']:.2f} s. Full reports: {pf['report']}.", "",
                  "| self % | DSO | symbol |", "|---|---|---|"]
            L += [f"| {t['pct']:.2f} | {t['dso']} | `{t['symbol'][:110]}` |" for t in pf["top"][:20]]
            L += [""]
    return "\n".join(L) + "\n"


def markdown_lab(s: dict) -> list[str]:
    """Sections of the namespace scenarios: netem_check, swarm, wan."""
    L = []
    nc = s.get("netem_check")
    if nc:
        L += ["## Link emulator self-check (bench/lab.py check)", ""]
        if "skipped" in nc:
            L += [f"Skipped: {nc['skipped']}.", ""]
        else:
            pv, n0, nf = nc["plain_veth"]["tcp"], nc["netem_0ms"]["tcp"], nc["netem_0ms_frames"]["tcp"]
            td = nc["tcp_delay"]
            ti = td["sender"]["tcp_info"]
            infl = ti["unacked"] * ti["snd_mss"]
            ls = nc["loss"]
            L += ["| check | measured | verdict |", "|---|---|---|",
                  f"| one TCP stream, plain veth | {pv['mbit_s']:.0f} Mbit/s | |",
                  f"| one TCP stream through mt-netem, 0 ms, no loss (GSO frames whole) | {n0['mbit_s']:.0f} Mbit/s | "
                  f"{'ok' if nc['netem_0ms']['ok'] else 'FAILED'} (≥ 1000) |",
                  f"| the same, frame by frame (lossy mode, TSO off) | {nf['mbit_s']:.0f} Mbit/s | "
                  f"{'ok' if nc['netem_0ms_frames']['ok'] else 'FAILED'} (≥ 200) |",
                  *[f"| ping RTT, {k[5:-2]} ms each way | {v['rtt_avg_ms']:.1f} ms avg ({v['rtt_min_ms']:.1f}–{v['rtt_max_ms']:.1f}) | "
                    f"{'ok' if v['ok'] else 'FAILED'} |" for k, v in nc.items() if k.startswith("ping_")],
                  f"| one TCP stream, 200 ms each way, second half | {td['second_half_mbit_s']:.1f} Mbit/s vs in flight "
                  f"{infl / MiB:.2f} MiB / RTT {ti['rtt_us'] / 1000:.0f} ms = {infl * 8 / (ti['rtt_us'] / 1e6) / 1e6:.1f} Mbit/s "
                  f"(cwnd {ti['snd_cwnd']} × {ti['snd_mss']} B, peer window {ti['snd_wnd']} B, send buffer {ti['sndbuf']} B) | "
                  f"{'ok' if td['ok'] else 'FAILED'} |",
                  f"| loss, configured {ls['configured']:.2%} towards one host | {ls['ping']['loss']:.2%} of "
                  f"{ls['ping']['sent']} pings; mt-netem dropped {ls['stats']['ba']['dropped_loss']} of "
                  f"{ls['stats']['ba']['frames_in']} frames | {'ok' if ls['ok'] else 'FAILED'} |", ""]
    sw = s.get("swarm")
    if sw:
        L += ["## Swarm: 1 seeder, N leechers, every uplink capped (namespaces)", ""]
        if "skipped" in sw:
            L += [f"Skipped: {sw['skipped']}.", ""]
        else:
            L += [f"{human(sw['size'])} file; {sw['hosts']}. libtorrent: {sw['libtorrent']}.", "",
                  "Last finish: from the first `download_file --wait` (libtorrent: the first \"go\") to the "
                  "last one returning. Ideal: the upload-capacity bound (see docs/BENCHMARKS.md). From seeder: "
                  "share of the leechers' payload bytes that came from the seeder. Seeder upload: bytes on "
                  "the seeder's interface (tx_bytes) ÷ file size. "
                  + (f"Median of {sw['runs']} runs." if sw["runs"] > 1 else "One run."), "",
                  "| case | engine | last finish (s) | ÷ ideal | ideal (s) | per leecher (s, median, min–max) | from seeder | seeder upload ÷ F |",
                  "|---|---|---|---|---|---|---|---|"]
            for row in sw["cases"]:
                case = f"{row['leechers']} leechers " + (f"one every {row['join_interval_s']:g} s"
                                                         if row["join_interval_s"] else "together")
                for eng in ("minitorr", "libtorrent"):
                    rs = row.get(eng) or []
                    if not rs:
                        continue
                    lf = stats([r["last_finish_s"] for r in rs])
                    L.append(f"| {case} | {eng} | {cell(lf)} | {cell(stats([r['ratio_to_ideal'] for r in rs]), '×')} | "
                             f"{row['ideal_s']:.1f} | {cell(rs[-1]['per_leecher_s'], '', 1)} | "
                             f"{cell(stats([r['from_seeder'] for r in rs]), ' %', 0, 100)} | "
                             f"{cell(stats([r['seeder_upload_x_file'] for r in rs]), '×')} |")
            L += [""]
    wn = s.get("wan")
    if wn:
        L += ["## WAN: 1 seeder, 1 downloader behind an emulated long link (mt-netem)", ""]
        if "skipped" in wn:
            L += [f"Skipped: {wn['skipped']}.", ""]
        else:
            sc = wn["tcp_sysctls"]
            L += [f"{human(wn['size'])} file; {wn['hosts']}. libtorrent: {wn['libtorrent']}. TCP: "
                  f"{sc['tcp_congestion_control'][0]}, tcp_rmem {' '.join(sc['tcp_rmem'])}, tcp_wmem {' '.join(sc['tcp_wmem'])}.",
                  "", "Times: minitorr `download_file --wait` wall time; libtorrent \"go\" → finished; one TCP "
                  "stream (bench/tcpstream.py) connect → EOF of the same number of bytes. "
                  + (f"Median of {wn['runs']} runs." if wn["runs"] > 1 else "One run."), "",
                  "| delay each way | loss each way | ping RTT (ms) | one TCP stream | minitorr | libtorrent | minitorr ÷ TCP | minitorr ÷ libtorrent |",
                  "|---|---|---|---|---|---|---|---|"]
            for r in wn["rows"]:
                mb = r["mbit_s"]
                L.append(f"| {r['delay_ms']:g} ms | {r['loss']} | {fmt(r['ping_rtt_ms'], '', 1)} | "
                         f"{cell(r['tcp_s'], ' s', 1)} ({fmt(mb['tcp'], '', 1)} Mbit/s) | "
                         f"{cell(r['minitorr_s'], ' s', 1)} ({fmt(mb['minitorr'], '', 1)} Mbit/s) | "
                         f"{cell(r['libtorrent_s'], ' s', 1)} ({fmt(mb['libtorrent'], '', 1)} Mbit/s) | "
                         f"{fmt(r['minitorr_vs_tcp'], '×')} | {fmt(r['minitorr_vs_libtorrent'], '×')} |")
            L += ["", "Ratios are throughput ratios (> 1: minitorr faster).", ""]
    return L


# ---------------------------------------------------------------- trees (issue #13)


def make_tree(data_dir: Path, tag: str, layout: list[tuple[str, int]], seed: int) -> Path:
    """A directory tree of (relative path, size) files of seeded random bytes, written once
    (cached in data_dir; a `.complete` marker next to it says it is whole)."""
    root = data_dir / tag / tag
    marker = data_dir / tag / ".complete"
    if not marker.exists():
        log(f"writing tree {tag}: {len(layout)} files, {human(sum(s for _, s in layout))}")
        shutil.rmtree(root, ignore_errors=True)
        import random
        rng = random.Random(seed)
        for rel, size in layout:
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            with open(p, "wb") as f:
                left = size
                while left:
                    n = min(left, 16 * MiB)
                    f.write(rng.randbytes(n))
                    left -= n
        marker.write_text(f"{len(layout)}\n")
    for dirpath, _, names in os.walk(root):  # warm the page cache (and the dentry cache)
        for n in names:
            with open(os.path.join(dirpath, n), "rb") as f:
                while f.read(16 * MiB):
                    pass
    return root


def tree_layout_small(n: int, seed: int) -> list[tuple[str, int]]:
    """n files of 1–64 KiB, three levels: dNN/eNN/fNNNN.bin (10 × 10 directories)."""
    import random
    rng = random.Random(seed)
    return [(f"d{i % 10:02}/e{(i // 10) % 10:02}/f{i:06}.bin", rng.randint(1024, 64 * 1024)) for i in range(n)]


def tree_layout_tiny(n: int, seed: int) -> list[tuple[str, int]]:
    """n files of 0–64 bytes (about one in 65 empty), three levels like tree_layout_small."""
    import random
    rng = random.Random(seed)
    return [(f"d{i % 10:02}/e{(i // 10) % 10:02}/f{i:06}.bin", rng.randint(0, 64)) for i in range(n)]


def timed_ctl(cl: Cluster, d: Daemon, *args, timeout=900) -> tuple[float, dict]:
    """Wall time from starting minitorrctl to its return (JSON parsing by Python not counted)."""
    cmd = [cl.bins / "minitorrctl", "--socket", d.sock, "--json", *args]
    t = time.perf_counter()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                       env=cl.env, timeout=timeout, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    try:
        doc = json.loads(r.stdout)
    except json.JSONDecodeError:
        doc = {"raw": r.stdout[-2000:], "stderr": r.stderr[-2000:]}
    if r.returncode != 0:
        raise CtlError(args, doc, r.returncode)
    return wall, doc


def tree_stats(root: Path) -> tuple[int, int]:
    """(regular files, bytes) under root."""
    n = b = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            n += 1
            b += os.lstat(os.path.join(dirpath, name)).st_size
    return n, b


def tree_download(cl: Cluster, name: str, group: str, item: str, files: int, size: int,
                  is_tree: bool) -> dict:
    """One cold `download_file --wait` by a fresh minitorrd: wall time, CPU, peak RSS (VmHWM)."""
    d = cl.start_daemon(name)
    try:
        cl.join(d, [group])
        dest = d.dir / "in"
        dest.mkdir()
        cpu0 = proc_cpu(d.pid)
        # VmRSS sampled every 0.2 s while the download runs: the steady level during it
        # (VmHWM at return also holds the completion work done before the answer).
        samples: list[int] = []
        stop = threading.Event()

        def sample():
            while not stop.wait(0.2):
                try:
                    samples.append(proc_status_kb(d.pid, "VmRSS") or 0)
                except OSError:
                    return
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            wall, doc = timed_ctl(cl, d, "download_file", group, item, dest, "--wait")
        finally:
            stop.set()
            sampler.join()
        cpu = proc_cpu(d.pid) - cpu0
        hwm = proc_status_kb(d.pid, "VmHWM")
        if doc["download"]["state"] != "complete":
            raise RuntimeError(f"download not complete: {doc}")
        got = tree_stats(dest / item) if is_tree else (1, (dest / item).stat().st_size)
        if got != (files, size):
            raise RuntimeError(f"downloaded {got} (files, bytes), want {(files, size)}")
        # The daemon's work does not end when the download is reported complete (it records
        # and announces the new share and saves its state, again at logout): measure after.
        time.sleep(2)
        life = lifetime_peak_kib(cl, d)
        during = samples[:-1] or samples  # the last sample may already be the completion
        return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": hwm / 1024,
                "during_rss_mib": (max(during) / 1024) if during else None,
                "lifetime_peak_rss_mib": life / 1024, "mbps": size * 8 / 1e6 / wall}
    finally:
        cl.stop_daemon(d)
        shutil.rmtree(d.dir, ignore_errors=True)


def lifetime_peak_kib(cl: Cluster, d: Daemon) -> int:
    """Log `d` out (it saves its state), then its VmHWM: the peak over the download, the work
    after completion and the logout. (Not the child's ru_maxrss: Linux carries the forking
    Python's pre-exec high-water mark into it.) The caller stops the daemon."""
    try:
        cl.ctl(d, "logout", timeout=60)
    except Exception:  # noqa: BLE001 - measured either way
        pass
    time.sleep(0.5)
    return proc_status_kb(d.pid, "VmHWM")


def scenario_tree(a, bins, work, data_dir, res: dict):
    """Issue #13's floors: a tree of many small files (upload, list, download), a tree of very
    many tiny files (list time, downloader RSS), and a big tree of 16 files from 3 seeders
    against a single file of the same size from the same seeders."""
    cl = Cluster(bins, work / "tree", Net(False))
    out: dict = {}
    try:
        seeders = [cl.start_daemon(f"ts{i}") for i in range(3)]
        for s in seeders:
            cl.join(s, ["tree"])
        rows = []
        for kind, n, layout_fn in (("small", a.tree_small, tree_layout_small),
                                   ("tiny", a.tree_tiny, tree_layout_tiny)):
            if kind not in a.tree_cases:
                continue
            tag = f"tree-{kind}-{n}"
            layout = layout_fn(n, 13)
            root = make_tree(data_dir, tag, layout, 13)
            size = sum(s for _, s in layout)
            log(f"tree: {kind}, {n} files, {human(size)}: upload")
            up_s, up = timed_ctl(cl, seeders[0], "upload_file", root, "tree")
            item = up["file"]
            lf = []
            for _ in range(5):
                lf.append(timed_ctl(cl, seeders[0], "list_files", "tree", tag)[0])
            log(f"tree: {kind}: upload {up_s:.2f} s, list_files ITEM {statistics.median(lf):.3f} s; download")
            dls = [tree_download(cl, f"td-{kind}-{r}", "tree", tag, n, size, True) for r in range(a.runs)]
            rows.append({
                "case": kind, "files": n, "size": size, "pieces": item["pieces"],
                "piece_size": item["piece_size"], "upload_s": up_s, "list_files_item_s": stats(lf),
                "download_s": stats([r["wall_s"] for r in dls]),
                "download_cpu_s": stats([r["cpu_s"] for r in dls]),
                "download_peak_rss_mib": stats([r["peak_rss_mib"] for r in dls]),
                "during_rss_mib": stats([r["during_rss_mib"] for r in dls if r["during_rss_mib"]]),
                "lifetime_peak_rss_mib": stats([r["lifetime_peak_rss_mib"] for r in dls]),
                # the seeder that uploaded the tree and served every download of it
                "seeder_peak_rss_mib": proc_status_kb(seeders[0].pid, "VmHWM") / 1024,
            })
            cl.ctl(seeders[0], "stop_share", "tree", tag)
        out["many_files"] = rows
        if "big" not in a.tree_cases:
            res["tree"] = out
            return
        # big tree of 16 files vs a single file of the same size, both held by the 3 seeders
        size = a.tree_size
        per = size // 16
        layout = [(f"{'ab'[i // 8]}/part{i:02}.bin", per) for i in range(16)]
        tag = f"tree-big-{size}"
        root = make_tree(data_dir, tag, layout, 16)
        single = make_data(data_dir, size, "loopback")
        log(f"tree: {human(size)} tree of 16 files and a single file, 3 seeders: uploads")
        for s in seeders:
            cl.ctl(s, "upload_file", root, "tree")
            cl.ctl(s, "upload_file", single, "tree")
        tree_runs, file_runs = [], []
        for rnd in range(a.warmup + a.runs):
            # alternate which goes first, so a drift in machine load hits both alike
            order = [("tree", True), ("file", False)] if rnd % 2 == 0 else [("file", False), ("tree", True)]
            for what, is_tree in order:
                log(f"tree: {human(size)} {what}, round {rnd}")
                r = tree_download(cl, f"tb-{what}-{rnd}", "tree", tag if is_tree else single.name,
                                  16 if is_tree else 1, size, is_tree)
                if rnd >= a.warmup:
                    (tree_runs if is_tree else file_runs).append(r)
        tw, fw = stats([r["wall_s"] for r in tree_runs]), stats([r["wall_s"] for r in file_runs])
        out["big"] = {
            "size": size, "files": 16, "seeders": 3,
            "tree_s": tw, "file_s": fw,
            "tree_mbit_s": stats([r["mbps"] for r in tree_runs]),
            "file_mbit_s": stats([r["mbps"] for r in file_runs]),
            "tree_peak_rss_mib": stats([r["peak_rss_mib"] for r in tree_runs]),
            "file_peak_rss_mib": stats([r["peak_rss_mib"] for r in file_runs]),
            "tree_lifetime_peak_rss_mib": stats([r["lifetime_peak_rss_mib"] for r in tree_runs]),
            "file_lifetime_peak_rss_mib": stats([r["lifetime_peak_rss_mib"] for r in file_runs]),
            # > 1: the tree is slower; the floor is 1.10
            "tree_time_over_file": ratio(tw["median"], fw["median"]),
        }
        res["tree"] = out
    finally:
        cl.shutdown()


def markdown_tree(s: dict) -> list[str]:
    t = s.get("tree")
    if not t:
        return []
    L = ["## Trees (issue #13), 127.0.0.1", "",
         "Wall time of `minitorrctl` from start to return (`upload_file DIR`, `list_files GROUP ITEM "
         "--json`, `download_file --wait` by a fresh daemon); peak RSS = VmHWM of the downloading "
         "minitorrd when `download_file --wait` returns; peak after = its VmHWM 2 s later and after "
         "`logout` (the work after completion included); RSS during = the highest VmRSS sampled every "
         "0.2 s while `download_file --wait` ran; seeder peak = VmHWM of the seeder that uploaded "
         "the trees and served every download. Files in three levels (dNN/eNN/fNNNNNN.bin).", "",
         "| tree | size (pieces) | upload_file | list_files ITEM | download | download CPU | downloader RSS during | downloader peak RSS | peak after logout | seeder peak RSS |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for r in t.get("many_files", []):
        what = (f"{r['files']:,} files of 1–64 KiB" if r["case"] == "small"
                else f"{r['files']:,} files of 0–64 B")
        sz = f"{r['size'] / MiB:.1f} MiB" if r["size"] >= MiB else f"{r['size']:,} B"
        L.append(f"| {what} | {sz} "
                 f"({r['pieces']:,}) | {r['upload_s']:.2f} s | {cell(r['list_files_item_s'], ' s', 3)} | "
                 f"{cell(r['download_s'], ' s')} | {cell(r['download_cpu_s'], ' s')} | "
                 f"{cell(r.get('during_rss_mib'), ' MiB', 1)} | "
                 f"{cell(r['download_peak_rss_mib'], ' MiB', 1)} | {cell(r.get('lifetime_peak_rss_mib'), ' MiB', 1)} | "
                 f"{fmt(r.get('seeder_peak_rss_mib'), ' MiB', 1)} |")
    b = t.get("big")
    if b:
        L += ["", f"{human(b['size'])}: a tree of {b['files']} files vs a single file, {b['seeders']} seeders "
              "holding both:", "",
              "| item | download | Mbit/s | downloader peak RSS | peak after logout |", "|---|---|---|---|---|",
              f"| tree of {b['files']} files | {cell(b['tree_s'], ' s')} | {cell(b['tree_mbit_s'], '', 0)} | "
              f"{cell(b['tree_peak_rss_mib'], ' MiB', 1)} | {cell(b.get('tree_lifetime_peak_rss_mib'), ' MiB', 1)} |",
              f"| single file | {cell(b['file_s'], ' s')} | {cell(b['file_mbit_s'], '', 0)} | "
              f"{cell(b['file_peak_rss_mib'], ' MiB', 1)} | {cell(b.get('file_lifetime_peak_rss_mib'), ' MiB', 1)} |", "",
              f"Tree time ÷ single-file time (median): {fmt(b['tree_time_over_file'], '×', 3)} (floor: ≤ 1.10×)."]
    return L + [""]


def parse_stagger(s: str) -> list[tuple[int, float]]:
    """"8@2" = 8 leechers, one joining every 2 s; comma list; "" = none."""
    out = []
    for part in filter(None, s.split(",")):
        n, iv = part.split("@")
        out.append((int(n), float(iv)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=None, help="loopback file size (default 1GiB; quick 64MiB)")
    ap.add_argument("--runs", type=int, default=None, help="measured runs per case (default 3; quick 1)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up runs (default 1; quick 0)")
    ap.add_argument("--quick", action="store_true", help="small and fast: for CI and smoke tests")
    ap.add_argument("--profile", choices=["release", "debug"], default="release", help="which binaries")
    ap.add_argument("--no-build", action="store_true", help="use already built binaries")
    ap.add_argument("--bin-dir", type=Path, default=None,
                    help="where trackerd/minitorrd/minitorrctl are (default target/<profile>)")
    ap.add_argument("--out", type=Path, default=BENCH / "results", help="where latest.{md,json} go")
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "minitorr-bench-data",
                    help="cache of the random test files (written once, reused)")
    ap.add_argument("--no-libtorrent", dest="libtorrent", action="store_false", default=None)
    ap.add_argument("--no-netlab", dest="netlab", action="store_false", default=None)
    ap.add_argument("--no-perf", dest="perf", action="store_false", default=None)
    ap.add_argument("--no-plaintext", dest="plaintext_compare", action="store_false", default=True,
                    help="skip the plaintext-peer-link daemons (loopback comparison of TLS vs plaintext)")
    ap.add_argument("--netlab-size", type=parse_size, default=parse_size("256MiB"))
    ap.add_argument("--netlab-rate", default="200mbit")
    ap.add_argument("--netlab-runs", type=int, default=None)
    ap.add_argument("--loopback-runs", type=int, default=None,
                    help="measured rounds of the loopback downloads (default 5; quick: --runs)")
    ap.add_argument("--many-seeders", default=None, help="seeder counts, e.g. 10,100 (quick: 3,10)")
    ap.add_argument("--many-size", type=parse_size, default=None, help="file held by every seeder (64MiB; quick 4MiB)")
    ap.add_argument("--small-files", type=int, default=None, help="small files per seeder (10; quick 3)")
    ap.add_argument("--only", default="",
                    help="comma list of scenarios: loopback,netlab,many_peers,netem_check,swarm,wan,tree")
    ap.add_argument("--out-name", default="latest", help="report file names: OUT/NAME.{md,json}")
    ap.add_argument("--swarm-size", type=parse_size, default=None, help="swarm file size (64MiB; quick 8MiB)")
    ap.add_argument("--swarm-rate", default="50mbit", help="every host's egress cap in the swarm scenario")
    ap.add_argument("--swarm-leechers", default=None, help="leechers starting together, e.g. 4,8,16 (quick: 4)")
    ap.add_argument("--swarm-stagger", default=None,
                    help="staggered cases N@SECONDS, e.g. 8@2 = 8 leechers, one every 2 s (quick: 4@1)")
    ap.add_argument("--swarm-runs", type=int, default=1, help="runs of each swarm case (default 1)")
    ap.add_argument("--wan-size", type=parse_size, default=None, help="wan file size (64MiB; quick 8MiB)")
    ap.add_argument("--wan-delays", default=None, help="one-way delays in ms, e.g. 50,100,200 (quick: 50)")
    ap.add_argument("--wan-loss", default=None, help="loss each way, e.g. 0,1%% (quick: 1%%)")
    ap.add_argument("--wan-runs", type=int, default=1, help="runs of each wan case (default 1)")
    ap.add_argument("--tree-small", type=int, default=None, help="files of 1-64 KiB in the tree scenario (10000; quick 1000)")
    ap.add_argument("--tree-tiny", type=int, default=None, help="files of 0-64 B in the tree scenario (100000; quick 5000)")
    ap.add_argument("--tree-size", type=parse_size, default=None, help="the 16-file tree vs single file size (1GiB; quick 64MiB)")
    ap.add_argument("--tree-cases", default="small,tiny,big",
                    help="tree scenario cases to run: comma list of small,tiny,big (default all; "
                         "e.g. tiny = the 100,000-file RSS case alone)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    ap.add_argument("--background-load", type=int, default=0, metavar="N",
                    help="keep N busy-looping processes running during the whole bench (a noisy "
                         "neighbour: how the ratios hold when CPU is scarce)")
    a = ap.parse_args()
    q = a.quick
    a.size = a.size or parse_size("64MiB" if q else "1GiB")
    a.runs = a.runs if a.runs is not None else (1 if q else 3)
    a.warmup = a.warmup if a.warmup is not None else (0 if q else 1)
    a.netlab_runs = a.netlab_runs if a.netlab_runs is not None else a.runs
    a.loopback_runs = a.loopback_runs if a.loopback_runs is not None else (a.runs if q else max(a.runs, 5))
    a.lt_off = a.libtorrent is False  # swarm/wan compare with libtorrent even in --quick
    a.libtorrent = (not q) if a.libtorrent is None else a.libtorrent
    a.netlab = (not q) if a.netlab is None else a.netlab
    a.perf = (not q) if a.perf is None else a.perf
    a.many_seeders = [int(x) for x in (a.many_seeders or ("3,10" if q else "10,100")).split(",")]
    a.many_size = a.many_size or parse_size("4MiB" if q else "64MiB")
    a.small_files = a.small_files if a.small_files is not None else (3 if q else 10)
    only = set(filter(None, a.only.split(",")))
    a.only_set = only
    unknown = only - {"loopback", "netlab", "many_peers", "netem_check", "swarm", "wan", "tree"}
    if unknown:
        sys.exit(f"bench: unknown scenario(s) {', '.join(sorted(unknown))}")
    a.swarm_size = a.swarm_size or parse_size("8MiB" if q else "64MiB")
    a.swarm_leechers = [int(x) for x in (a.swarm_leechers or ("4" if q else "4,8,16")).split(",") if x]
    a.swarm_stagger = parse_stagger(a.swarm_stagger if a.swarm_stagger is not None else ("4@1" if q else "8@2"))
    a.wan_size = a.wan_size or parse_size("8MiB" if q else "64MiB")
    a.wan_delays = [float(x) for x in (a.wan_delays or ("50" if q else "50,100,200")).split(",")]
    a.wan_loss = [x.strip() for x in (a.wan_loss or ("1%" if q else "0,1%")).split(",")]
    a.tree_small = a.tree_small or (1000 if q else 10000)
    a.tree_tiny = a.tree_tiny or (5000 if q else 100000)
    a.tree_size = a.tree_size or parse_size("64MiB" if q else "1GiB")
    a.tree_cases = set(filter(None, a.tree_cases.split(",")))
    if a.tree_cases - {"small", "tiny", "big"}:
        sys.exit(f"bench: unknown --tree-cases {', '.join(sorted(a.tree_cases - {'small', 'tiny', 'big'}))}")
    a.out = a.out.resolve()
    a.out.mkdir(parents=True, exist_ok=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    t_start = time.perf_counter()
    meta = machine_info()
    meta.update({"profile": a.profile, "runs": a.runs, "loopback_runs": a.loopback_runs,
                 "background_load": a.background_load, "warmup": a.warmup, "quick": q,
                 "command": " ".join(["bench/run.py", *sys.argv[1:]])})
    if not a.no_build:
        build(a.profile, a.profile == "release")
    bins = (a.bin_dir or ROOT / "target" / a.profile).resolve()
    os.environ.setdefault("MT_NETEM_BIN", str(bins / "mt-netem"))  # the lab's link emulator
    for b in ("trackerd", "minitorrd", "minitorrctl"):
        if not (bins / b).exists():
            sys.exit(f"{bins / b} missing: build first (cargo build --bins{' --release' if a.profile == 'release' else ''})")

    work = Path(tempfile.mkdtemp(prefix="minitorr-bench."))
    res: dict = {}
    global KEEP_LOGS
    KEEP_LOGS = a.keep
    try:
        for i in range(a.background_load):
            spawn([sys.executable, "-c", "while True: pass"], work / f"busy{i}.log", os.environ.copy())
        if not only or "loopback" in only:
            data = make_data(a.data_dir, a.size, "loopback")
            scenario_upload_and_loopback(a, bins, work, data, a.size, res)
        if not only or "netlab" in only:
            scenario_netlab(a, bins, work, a.data_dir, res)
        if not only or "many_peers" in only:
            scenario_many_peers(a, bins, work, a.data_dir, res)
        # The namespace scenarios: part of a full run; --quick runs them only when --only asks.
        lab_full = not only and not q
        if lab_full or "netem_check" in only:
            scenario_netem_check(a, res)
        if lab_full or "swarm" in only:
            scenario_swarm(a, bins, work, a.data_dir, res)
        if lab_full or "wan" in only:
            scenario_wan(a, bins, work, a.data_dir, res)
        if lab_full or "tree" in only:
            scenario_tree(a, bins, work, a.data_dir, res)
    except BaseException:
        log(f"FAILED; logs kept in {work}")
        a.keep = True
        raise
    finally:
        cleanup()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    meta["loadavg_end"] = list(os.getloadavg())
    meta["total_s"] = time.perf_counter() - t_start
    report = {"meta": meta, "scenarios": res}
    (a.out / f"{a.out_name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (a.out / f"{a.out_name}.md").write_text(markdown(report))
    log(f"wrote {a.out / a.out_name}.md and .json in {meta['total_s']:.0f} s")
    print((a.out / f"{a.out_name}.md").read_text())


if __name__ == "__main__":
    main()
