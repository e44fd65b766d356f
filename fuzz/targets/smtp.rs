//! See `src/smtp.rs`.
fn main() {
    afl::fuzz!(|data: &[u8]| mtad_fuzz::smtp::run(data));
}
