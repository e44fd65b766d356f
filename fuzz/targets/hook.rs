//! See `src/hook.rs`.
fn main() {
    afl::fuzz!(|data: &[u8]| mtad_fuzz::hook::run(data));
}
