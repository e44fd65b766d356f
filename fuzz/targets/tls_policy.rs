//! See `src/tls_policy.rs`.
fn main() {
    afl::fuzz!(|data: &[u8]| mtad_fuzz::tls_policy::run(data));
}
