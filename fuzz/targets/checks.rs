//! See `src/checks.rs`.
fn main() {
    afl::fuzz!(|data: &[u8]| mtad_fuzz::checks::run(data));
}
