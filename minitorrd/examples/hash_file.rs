//! Time `hash_file` (what upload_file does) on a file: `cargo run --release --example hash_file -- PATH`.
fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: hash_file PATH [PIECE_SIZE]");
    let ps: u32 = std::env::args()
        .nth(2)
        .map_or(512 * 1024, |s| s.parse().unwrap());
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let (meta, _) = minitorrd::sharing::hasher::hash_file(path.as_ref(), "f", ps).unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "{:.3} s  {:.0} MB/s  {}",
            s,
            meta.size as f64 / s / 1e6,
            meta.sha1.short()
        );
    }
}
