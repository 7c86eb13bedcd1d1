#!/usr/bin/python3
"""libtorrent side of the Minitorr benchmark (run with the system /usr/bin/python3, which has
Debian's python3-libtorrent 2.0.x; bench/run.py calls it).

  lt_peer.py version
  lt_peer.py make_torrent FILE OUT.torrent PIECE_SIZE
  lt_peer.py seed TORRENT SAVE_DIR IP:PORT          seed mode (no rehash); prints "ready", runs
                                                    until stdin closes or SIGTERM
  lt_peer.py download TORRENT SAVE_DIR IP:PORT PEER [PEER...]
                                                    cold downloader; prints one JSON line
  lt_peer.py swarm TORRENT SAVE_DIR IP:PORT PEER [PEER...]
                                                    swarm member (bench/run.py `swarm`, `wan`):
                                                    session up, prints "ready"; on "go" (stdin)
                                                    adds the torrent and connects to every PEER
                                                    (what a tracker would hand out), prints one
                                                    JSON line when finished (per-peer bytes by
                                                    IP), then seeds on until stdin closes

Settings are libtorrent "tuned for TCP": high_performance_seed() pack, uTP off, encryption off
(plaintext only), no DHT/LSD/UPnP/NAT-PMP, multiple connections per IP allowed, large request
queues. The download time runs from add_torrent to torrent_finished (every piece hash-checked).
"""
import json
import os
import resource
import signal
import sys
import threading
import time

import libtorrent as lt


def settings(listen):
    s = lt.high_performance_seed()
    s.update(
        {
            "listen_interfaces": listen,
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
            "enable_outgoing_tcp": True,
            "enable_incoming_tcp": True,
            "out_enc_policy": int(lt.enc_policy.pe_disabled),
            "in_enc_policy": int(lt.enc_policy.pe_disabled),
            "allowed_enc_level": int(lt.enc_level.pe_plaintext),
            "prefer_rc4": False,
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "allow_multiple_connections_per_ip": True,
            "max_out_request_queue": 1500,
            "max_allowed_in_request_queue": 2000,
            "connections_limit": 500,
            "alert_mask": int(
                lt.alert.category_t.status_notification
                | lt.alert.category_t.error_notification
                | lt.alert.category_t.piece_progress_notification
            ),
        }
    )
    return s


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_torrent(path, out, piece_size):
    fs = lt.file_storage()
    lt.add_files(fs, path)
    ct = lt.create_torrent(fs, int(piece_size))
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(path)))
    with open(out, "wb") as f:
        f.write(lt.bencode(ct.generate()))


def wait_listening(ses, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for a in ses.pop_alerts():
            if isinstance(a, lt.listen_succeeded_alert):
                return
            if isinstance(a, lt.listen_failed_alert):
                raise SystemExit(f"listen failed: {a.message()}")
        ses.wait_for_alert(100)
    raise SystemExit("listen timeout")


def seed(torrent, save_dir, listen):
    ses = lt.session(settings(listen))
    wait_listening(ses)
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(torrent)
    atp.save_path = save_dir
    atp.flags |= lt.torrent_flags.seed_mode
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    h = ses.add_torrent(atp)
    deadline = time.time() + 30
    while not h.status().is_seeding:
        if time.time() > deadline:
            raise SystemExit("seeder never reached seeding state")
        time.sleep(0.02)
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    while not stop.wait(0.5):
        ses.pop_alerts()


def download(torrent, save_dir, listen, peers):
    ses = lt.session(settings(listen))
    wait_listening(ses)
    ti = lt.torrent_info(torrent)
    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.save_path = save_dir
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    h = ses.add_torrent(atp)
    for p in peers:
        ip, port = p.rsplit(":", 1)
        h.connect_peer((ip, int(port)))
    first_piece = None
    done = False
    deadline = t0 + 600
    while not done:
        ses.wait_for_alert(20)
        for a in ses.pop_alerts():
            if isinstance(a, lt.piece_finished_alert) and first_piece is None:
                first_piece = time.perf_counter() - t0
            elif isinstance(a, lt.torrent_finished_alert):
                done = True
            elif isinstance(a, lt.torrent_error_alert):
                raise SystemExit(f"torrent error: {a.message()}")
        if not done and h.status().is_finished:
            done = True
        if time.perf_counter() > deadline:
            raise SystemExit("download timeout")
    elapsed = time.perf_counter() - t0
    st = h.status()
    cpu1 = cpu_seconds()
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "elapsed_s": elapsed,
                "first_piece_s": first_piece,
                "bytes": ti.total_size(),
                "total_done": st.total_done,
                "cpu_s": cpu1 - cpu0,
                "peak_rss_kb": rss_kb,
                "peers": st.num_peers,
            }
        ),
        flush=True,
    )


def swarm(torrent, save_dir, listen, peers):
    s = settings(listen)
    # Peers of a swarm start together: one that is not listening yet is retried soon rather
    # than after the default 60 s (the other side also connects to us once it is up).
    s["min_reconnect_time"] = 1
    ses = lt.session(s)
    wait_listening(ses)
    ti = lt.torrent_info(torrent)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.save_path = save_dir
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    h = ses.add_torrent(atp)
    for p in peers:
        ip, port = p.rsplit(":", 1)
        h.connect_peer((ip, int(port)))
    done = False
    deadline = t0 + 900
    last_connect = t0
    while not done:
        ses.wait_for_alert(20)
        for a in ses.pop_alerts():
            if isinstance(a, lt.torrent_finished_alert):
                done = True
            elif isinstance(a, lt.torrent_error_alert):
                raise SystemExit(f"torrent error: {a.message()}")
        if not done and h.status().is_finished:
            done = True
        now = time.perf_counter()
        if not done and now - last_connect > 2:
            # peers that joined later (staggered) are connected as a tracker announce would
            for p in peers:
                ip, port = p.rsplit(":", 1)
                h.connect_peer((ip, int(port)))
            last_connect = now
        if now > deadline:
            raise SystemExit("download timeout")
    elapsed = time.perf_counter() - t0
    by_ip = {}
    for pi in h.get_peer_info():
        by_ip[pi.ip[0]] = by_ip.get(pi.ip[0], 0) + pi.total_download
    st = h.status()
    print(json.dumps({"elapsed_s": elapsed, "bytes": ti.total_size(), "total_done": st.total_done,
                      "cpu_s": cpu_seconds() - cpu0, "peers_bytes": by_ip, "peers": st.num_peers}),
          flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    while not stop.wait(0.5):
        ses.pop_alerts()


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "version":
        print(lt.__version__)
    elif cmd == "make_torrent":
        make_torrent(*sys.argv[2:5])
    elif cmd == "seed":
        seed(*sys.argv[2:5])
    elif cmd == "swarm":
        swarm(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    elif cmd == "download":
        download(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
