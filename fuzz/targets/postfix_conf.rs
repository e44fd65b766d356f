//! See `src/postfix_conf.rs`.
fn main() {
    afl::fuzz!(|data: &[u8]| mtad_fuzz::postfix_conf::run(data));
}
