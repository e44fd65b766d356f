//! See `src/proxy.rs`.
fn main() {
    afl::fuzz!(|data: &[u8]| mtad_fuzz::proxy::run(data));
}
