//! See `src/milter.rs`.
fn main() {
    afl::fuzz!(|data: &[u8]| mtad_fuzz::milter::run(data));
}
