//! Measures `ensure_host_image` on this machine: `cargo run --release -p bothy-store --example
//! host_image_timing -- DATA_DIR` (the first call builds the skeleton, the next ones reuse it).

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: host_image_timing DATA_DIR");
    let layout = bothy_store::Layout::new(dir);
    for i in 0..3 {
        let t = std::time::Instant::now();
        let img = bothy_store::images::ensure_host_image(&layout).unwrap();
        println!(
            "{i}: {:?} {} {:?}",
            t.elapsed(),
            img.skeleton_layer,
            img.host_dirs
        );
    }
}
