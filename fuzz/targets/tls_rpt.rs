//! See `src/tls_rpt.rs`.
fn main() {
    afl::fuzz!(|data: &[u8]| mtad_fuzz::tls_rpt::run(data));
}
