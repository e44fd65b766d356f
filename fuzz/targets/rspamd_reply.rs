//! See `src/rspamd_reply.rs`.
fn main() {
    afl::fuzz!(|data: &[u8]| mtad_fuzz::rspamd_reply::run(data));
}
