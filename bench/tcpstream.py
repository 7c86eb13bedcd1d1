#!/usr/bin/env python3
"""One TCP stream, for the lab's self-check and the `wan` baseline (stdlib only).

  tcpstream.py serve ADDR PORT (--bytes N | --seconds S)
        accept one connection, send N bytes (or for S seconds), close; prints "listening" when
        ready and, at the end, one JSON line with the sender's TCP_INFO sampled in the second
        half of the transfer (RTT, congestion window, peer's window, limited-by times)
  tcpstream.py fetch HOST PORT
        connect, read to EOF; prints one JSON line: bytes, seconds (from before connect to EOF),
        Mbit/s overall and over the second half of the transfer
"""
import json
import socket
import statistics
import struct
import sys
import time

CHUNK = 1 << 20


def tcp_info(s: socket.socket) -> dict:
    b = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256).ljust(256, b"\0")
    u32 = lambda off: struct.unpack_from("I", b, off)[0]  # noqa: E731
    u64 = lambda off: struct.unpack_from("Q", b, off)[0]  # noqa: E731
    return {
        "snd_mss": u32(16), "unacked": u32(24), "rtt_us": u32(68), "snd_cwnd": u32(80), "total_retrans": u32(100),
        "busy_time_ms": u64(168) // 1000, "rwnd_limited_ms": u64(176) // 1000,
        "sndbuf_limited_ms": u64(184) // 1000, "bytes_sent": u64(200),
        "bytes_retrans": u64(208), "snd_wnd": u32(228),
        "sndbuf": s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
    }


def serve(addr, port, nbytes=None, seconds=None):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port))
    ls.listen(1)
    print("listening", flush=True)
    c, _ = ls.accept()
    buf = b"\xa5" * CHUNK
    t0 = time.perf_counter()
    sent, samples = 0, []
    next_sample = 0.0
    while True:
        el = time.perf_counter() - t0
        if nbytes is not None and sent >= nbytes:
            break
        if seconds is not None and el >= seconds:
            break
        n = CHUNK if nbytes is None else min(CHUNK, nbytes - sent)
        c.sendall(buf[:n])
        sent += n
        if el >= next_sample:
            samples.append((el, tcp_info(c)))
            next_sample = el + 0.25
    total = time.perf_counter() - t0
    c.shutdown(socket.SHUT_WR)
    c.settimeout(120)
    while c.recv(CHUNK):
        pass
    last = tcp_info(c)
    late = [i for t, i in samples if t >= total / 2] or [last]
    med = {k: statistics.median(i[k] for i in late) for k in ("rtt_us", "snd_cwnd", "snd_wnd", "snd_mss", "unacked", "sndbuf")}
    info = dict(last, **{k: int(v) for k, v in med.items()})
    print(json.dumps({"sent": sent, "tcp_info": info}), flush=True)


def fetch(host, port):
    t0 = time.perf_counter()
    s = socket.create_connection((host, port))
    got, marks = 0, []
    while True:
        b = s.recv(CHUNK)
        if not b:
            break
        got += len(b)
        marks.append((time.perf_counter() - t0, got))
    total = time.perf_counter() - t0
    half = next(((t, n) for t, n in marks if t >= total / 2), (total, got))
    sh = (got - half[1]) * 8 / 1e6 / max(total - half[0], 1e-9)
    print(json.dumps({"bytes": got, "seconds": total, "mbit_s": got * 8 / 1e6 / total,
                      "second_half_mbit_s": sh}))


def main():
    a = sys.argv[1:]
    if a[:1] == ["serve"]:
        opt = dict(zip(a[3::2], a[4::2]))
        serve(a[1], int(a[2]), int(opt["--bytes"]) if "--bytes" in opt else None,
              float(opt["--seconds"]) if "--seconds" in opt else None)
    elif a[:1] == ["fetch"]:
        fetch(a[1], int(a[2]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
