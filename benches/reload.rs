//! What a reload costs: reading and compiling a configuration whose transport table has
//! 100,000 entries (`mtad::control::load_live`, the whole of a reload but binding
//! sockets and swapping pointers, which take microseconds).
//!
//!     cargo bench --bench reload
//!
//! Target: under 200 ms. Without `--bench` (as `cargo test --all-targets` runs it) it
//! loads the configuration once, as a smoke test.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;

const ENTRIES: usize = 100_000;

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut table = String::with_capacity(ENTRIES * 48);
    for i in 0..ENTRIES {
        let _ = writeln!(
            table,
            "customer{i}.example.test  smtp:[10.{}.{}.{}]:25",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        );
    }
    std::fs::write(dir.path().join("transport"), table).unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        r#"
server {
    hostname "mx.example.test"
    spool "spool"
}
listen "mx" address="127.0.0.1:2525"
networks "trusted" "127.0.0.0/8" "10.0.0.0/8"
table "transport" file="transport"
stage "rcpt" {
    accept client="trusted"
}
stage "route" {
    transport-table "transport"
    relay "smtp:[127.0.0.1]:2526"
}
"#,
    )
    .unwrap();
    (dir, config)
}

fn main() {
    let (_dir, config) = setup();
    let load = || {
        let (config, pipeline) = mtad::control::load_live(&config).expect("valid");
        assert_eq!(config.tables["transport"].len(), ENTRIES);
        black_box(pipeline);
    };
    if !std::env::args().any(|a| a == "--bench") {
        load();
        return;
    }
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    c.bench_function("reload: config + 100,000-entry transport table", |b| {
        b.iter(load)
    });
    c.final_summary();
}
