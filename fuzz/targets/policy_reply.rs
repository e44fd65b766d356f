//! See `src/policy_reply.rs`.
fn main() {
    afl::fuzz!(|data: &[u8]| mtad_fuzz::policy_reply::run(data));
}
