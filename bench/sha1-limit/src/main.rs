//! `sha1-limit PATH [REPEATS]`: the single-core SHA1 limit, with the same `sha1` 0.10 crate
//! (SHA-NI when the CPU has it) that minitorrd uses. Prints one JSON object:
//! `mem_gbps` hashes a 64 MiB in-memory buffer (no I/O); `file_gbps` reads PATH sequentially in
//! 1 MiB chunks on one thread and hashes it (page cache warm); best of REPEATS for each.
use std::io::Read;
use std::time::Instant;

use sha1::{Digest, Sha1};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: sha1-limit PATH [REPEATS]");
    let repeats: usize = args.next().map_or(3, |s| s.parse().expect("REPEATS"));

    let buf: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut mem_best = f64::MAX;
    for _ in 0..repeats {
        let t = Instant::now();
        let d = Sha1::digest(&buf);
        std::hint::black_box(d);
        mem_best = mem_best.min(t.elapsed().as_secs_f64());
    }

    let mut file_best = f64::MAX;
    let mut size = 0u64;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..repeats {
        let t = Instant::now();
        let mut f = std::fs::File::open(&path).expect("open");
        let mut h = Sha1::new();
        size = 0;
        loop {
            let n = f.read(&mut chunk).expect("read");
            if n == 0 {
                break;
            }
            h.update(&chunk[..n]);
            size += n as u64;
        }
        std::hint::black_box(h.finalize());
        file_best = file_best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{{\"mem_gbps\": {:.4}, \"file_gbps\": {:.4}, \"file_bytes\": {}, \"file_secs\": {:.4}}}",
        buf.len() as f64 / mem_best / 1e9,
        size as f64 / file_best / 1e9,
        size,
        file_best
    );
}
