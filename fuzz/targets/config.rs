//! See `src/config.rs`.
fn main() {
    afl::fuzz!(|data: &[u8]| mtad_fuzz::config::run(data));
}
