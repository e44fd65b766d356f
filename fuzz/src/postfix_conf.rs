//! `mtactl import postfix` (src/import/postfix/): a main.cf and a master.cf (the input
//! split at its first NUL byte) are parsed, every parameter expanded, and the whole
//! directory translated: it is refused or translated, without a panic, and what it
//! writes is an mtad configuration (or an error that says why not).

use std::io::Write as _;

use mtad::import::postfix::{Options, fuzz_conf, import};

/// This process's directory for the two files.
fn dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mtad-fuzz-postfix-conf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

pub fn run(data: &[u8]) {
    fuzz_conf(data);
    let (main, master) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    {
        let dir = dir();
        let write = |name: &str, bytes: &[u8]| {
            let mut f = std::fs::File::create(dir.join(name)).expect("create");
            f.write_all(bytes).expect("write");
        };
        write("main.cf", main);
        write("master.cf", master);
        let options = Options {
            hostname: Some("host.example".into()),
            spool: "/nonexistent/spool".into(),
        };
        if let Ok(imported) = import(&dir, &options) {
            assert!(imported.config.contains("server {"), "{}", imported.config);
            assert!(imported.config.contains("listen "), "{}", imported.config);
            let _ = imported.report.json();
        }
    }
}
