//! See `src/decision_record.rs`.
fn main() {
    afl::fuzz!(|data: &[u8]| mtad_fuzz::decision_record::run(data));
}
