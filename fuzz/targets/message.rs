//! See `src/message.rs`.
fn main() {
    afl::fuzz!(|data: &[u8]| mtad_fuzz::message::run(data));
}
