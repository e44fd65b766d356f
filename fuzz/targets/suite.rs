//! See `src/suite.rs`.
fn main() {
    afl::fuzz!(|data: &[u8]| mtad_fuzz::suite::run(data));
}
