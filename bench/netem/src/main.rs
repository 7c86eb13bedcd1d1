//! mt-netem: a link emulator for the bench lab (this kernel has no sch_netem).
//!
//! It moves Ethernet frames between two interfaces A and B (both ends of veth pairs, no IP
//! address of their own) through raw AF_PACKET sockets, and holds each frame in a timed queue
//! per direction (`link::Link`): one-way delay, optional jitter, random loss, optional rate cap.
//! TCP between the hosts behind A and B sees the delay and the loss for real.
//!
//! Frames keep their virtio-net header (PACKET_VNET_HDR), so checksum-offloaded and GSO frames
//! cross unchanged; the lab turns GSO off on emulated hosts (`gso_max_segs 1`) so that loss is
//! per wire-sized frame, not per 64 KiB super-frame.
//!
//! One thread per direction: ppoll on the receiving socket with a nanosecond timeout until the
//! next frame is due, drain what arrived, send what is due. `--stats FILE` gets a JSON snapshot
//! of the counters every 0.5 s and at exit (SIGTERM/SIGINT). Prints `ready` once both sockets
//! are bound.

mod link;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use link::{Counters, Link, Params};

static STOP: AtomicBool = AtomicBool::new(false);

const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const VNET_HDR_LEN: usize = 10;
/// Largest frame accepted: a 64 KiB GSO frame plus headers, with room to spare (BIG TCP off).
const BUF_LEN: usize = 256 * 1024;
/// Frames drained from the socket before the due ones are sent again.
const RX_BATCH: usize = 64;

#[derive(Parser, Debug)]
#[command(
    name = "mt-netem",
    about = "Delay/loss/rate link emulator between two interfaces (AF_PACKET)"
)]
struct Args {
    /// First interface (the lab uses the host side).
    #[arg(long)]
    a: String,
    /// Second interface (the lab uses the bridge side).
    #[arg(long)]
    b: String,
    /// One-way delay in ms, each direction.
    #[arg(long, default_value = "0")]
    delay: f64,
    /// One-way delay A→B in ms (overrides --delay).
    #[arg(long)]
    delay_ab: Option<f64>,
    /// One-way delay B→A in ms (overrides --delay).
    #[arg(long)]
    delay_ba: Option<f64>,
    /// Extra uniform jitter in [0, J] ms (frames are never reordered).
    #[arg(long, default_value = "0")]
    jitter: f64,
    /// Loss per frame, each direction: "1%" or "0.01".
    #[arg(long, default_value = "0", value_parser = parse_loss)]
    loss: f64,
    #[arg(long, value_parser = parse_loss)]
    loss_ab: Option<f64>,
    #[arg(long, value_parser = parse_loss)]
    loss_ba: Option<f64>,
    /// Rate cap in Mbit/s, each direction (default: none).
    #[arg(long)]
    rate_mbit: Option<f64>,
    /// Bytes that may wait per direction (default: 50 ms at the rate cap, 256 MiB without).
    #[arg(long)]
    queue_bytes: Option<usize>,
    /// PRNG seed for loss and jitter (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Write counters as JSON to this file every 0.5 s and at exit.
    #[arg(long)]
    stats: Option<PathBuf>,
}

fn parse_loss(s: &str) -> Result<f64, String> {
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|e| e.to_string())? / 100.0,
        None => s.trim().parse::<f64>().map_err(|e| e.to_string())?,
    };
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("loss must be within 0..1 (or 0%..100%), got {s}"))
    }
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0) / 1000.0)
}

fn os_err(what: &str) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn setopt(
    fd: libc::c_int,
    level: libc::c_int,
    opt: libc::c_int,
    val: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: a valid socket fd and a pointer to a c_int of the length given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &val as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if r < 0 {
        return Err(os_err(&format!("setsockopt({level}, {opt})")));
    }
    Ok(())
}

/// A raw packet socket bound to `ifname`, promiscuous, with virtio-net headers, not seeing the
/// frames it sends itself.
fn open_iface(ifname: &str) -> std::io::Result<OwnedFd> {
    let cname = std::ffi::CString::new(ifname).map_err(|e| std::io::Error::other(e.to_string()))?;
    // SAFETY: plain libc calls on a NUL-terminated name; fd ownership moves into OwnedFd.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(os_err(&format!("interface {ifname}")));
    }
    // Protocol 0: receives nothing until bound to the interface below.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(os_err("socket(AF_PACKET) (needs CAP_NET_RAW)"));
    }
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    setopt(raw, libc::SOL_PACKET, PACKET_VNET_HDR, 1)?;
    setopt(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
    // Room for a burst while the thread is busy sending (FORCE: above rmem_max, as root).
    let _ = setopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 32 << 20);
    let _ = setopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20);
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex as i32;
    let r = unsafe {
        libc::bind(
            raw,
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r < 0 {
        return Err(os_err(&format!("bind to {ifname}")));
    }
    let mut mr: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mr.mr_ifindex = ifindex as i32;
    mr.mr_type = libc::PACKET_MR_PROMISC as u16;
    let r = unsafe {
        libc::setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mr as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::packet_mreq>() as u32,
        )
    };
    if r < 0 {
        return Err(os_err(&format!("promiscuous mode on {ifname}")));
    }
    Ok(fd)
}

#[derive(Default, Clone, Copy)]
struct DirStats {
    counters: Counters,
    send_errors: u64,
    truncated: u64,
    max_queued_bytes: usize,
}

fn run_direction(
    rx: Arc<OwnedFd>,
    tx: Arc<OwnedFd>,
    params: Params,
    seed: u64,
    out: Arc<Mutex<DirStats>>,
) {
    let mut link: Link<Vec<u8>> = Link::new(params, seed);
    let mut buf = vec![0u8; BUF_LEN];
    let mut st = DirStats::default();
    let rxfd = rx.as_raw_fd();
    let txfd = tx.as_raw_fd();
    let mut last_publish = Instant::now();
    while !STOP.load(Ordering::Relaxed) {
        let now = Instant::now();
        while let Some(frame) = link.pop_due(now) {
            // SAFETY: sending an owned buffer on a bound packet socket.
            let r =
                unsafe { libc::send(txfd, frame.as_ptr() as *const libc::c_void, frame.len(), 0) };
            if r < 0 {
                st.send_errors += 1;
            }
        }
        // Sleep until a frame arrives or the next one is due (at most 50 ms: checks STOP).
        let wait = link
            .next_due()
            .map_or(Duration::from_millis(50), |d| {
                d.saturating_duration_since(now)
            })
            .min(Duration::from_millis(50));
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        let mut pfd = libc::pollfd {
            fd: rxfd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask change.
        let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if n > 0 {
            for _ in 0..RX_BATCH {
                // SAFETY: receiving into our own buffer of BUF_LEN bytes.
                let r = unsafe {
                    libc::recv(
                        rxfd,
                        buf.as_mut_ptr() as *mut libc::c_void,
                        BUF_LEN,
                        libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    )
                };
                if r < 0 {
                    break;
                }
                let len = r as usize;
                if len > BUF_LEN {
                    st.truncated += 1;
                    continue;
                }
                if len <= VNET_HDR_LEN {
                    continue;
                }
                // The delay counts from when the frame reached the socket, not from now.
                link.push(Instant::now(), len - VNET_HDR_LEN, buf[..len].to_vec());
            }
            st.max_queued_bytes = st.max_queued_bytes.max(link.queued_bytes());
        }
        if last_publish.elapsed() >= Duration::from_millis(100) {
            st.counters = link.counters;
            *out.lock().unwrap() = st;
            last_publish = Instant::now();
        }
    }
    st.counters = link.counters;
    *out.lock().unwrap() = st;
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn stats_json(args: &Args, ab: &DirStats, ba: &DirStats) -> serde_json::Value {
    let dir = |s: &DirStats| {
        serde_json::json!({
            "frames_in": s.counters.frames_in, "bytes_in": s.counters.bytes_in,
            "frames_out": s.counters.frames_out, "bytes_out": s.counters.bytes_out,
            "dropped_loss": s.counters.dropped_loss, "dropped_queue": s.counters.dropped_queue,
            "send_errors": s.send_errors, "truncated": s.truncated,
            "max_queued_bytes": s.max_queued_bytes,
        })
    };
    serde_json::json!({"a": args.a, "b": args.b, "ab": dir(ab), "ba": dir(ba)})
}

fn write_stats(path: &PathBuf, v: &serde_json::Value) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, v.to_string() + "\n").is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

fn main() {
    let args = Args::parse();
    let rate_bps = args.rate_mbit.map(|m| (m * 1e6) as u64);
    let queue_limit_bytes = args
        .queue_bytes
        .unwrap_or_else(|| rate_bps.map_or(256 << 20, |r| ((r / 8) as usize / 20).max(64 << 10)));
    let dir_params = |delay: Option<f64>, loss: Option<f64>| Params {
        delay: ms(delay.unwrap_or(args.delay)),
        jitter: ms(args.jitter),
        loss: loss.unwrap_or(args.loss),
        rate_bps,
        queue_limit_bytes,
    };
    let p_ab = dir_params(args.delay_ab, args.loss_ab);
    let p_ba = dir_params(args.delay_ba, args.loss_ba);
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });

    let (fa, fb) = match (open_iface(&args.a), open_iface(&args.b)) {
        (Ok(a), Ok(b)) => (Arc::new(a), Arc::new(b)),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("mt-netem: {e}");
            std::process::exit(1);
        }
    };
    // SAFETY: installing an async-signal-safe handler (one atomic store).
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        // Wake-ups on time: the default 50 µs timer slack is small, but free to lower.
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    let s_ab = Arc::new(Mutex::new(DirStats::default()));
    let s_ba = Arc::new(Mutex::new(DirStats::default()));
    let threads = [
        {
            let (rx, tx, st) = (fa.clone(), fb.clone(), s_ab.clone());
            std::thread::spawn(move || run_direction(rx, tx, p_ab, seed, st))
        },
        {
            let (rx, tx, st) = (fb.clone(), fa.clone(), s_ba.clone());
            std::thread::spawn(move || run_direction(rx, tx, p_ba, seed ^ 0x5555_5555, st))
        },
    ];
    println!("ready");
    let _ = std::io::stdout().flush();
    while !STOP.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(p) = &args.stats {
            if let (Ok(ab), Ok(ba)) = (s_ab.lock(), s_ba.lock()) {
                write_stats(p, &stats_json(&args, &ab, &ba));
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
    let v = stats_json(&args, &s_ab.lock().unwrap(), &s_ba.lock().unwrap());
    if let Some(p) = &args.stats {
        write_stats(p, &v);
    }
    eprintln!("{v}");
}
