//! See `src/table.rs`.
fn main() {
    afl::fuzz!(|data: &[u8]| mtad_fuzz::table::run(data));
}
