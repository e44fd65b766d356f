//! `aliases` and `virtual` files.

use super::*;

#[test]
fn aliases_and_virtual_files() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("mtad.kdl");
    std::fs::write(dir.path().join("aliases"), "root: admin@example.com\n").unwrap();
    std::fs::write(dir.path().join("virtual"), "@old.test new@example.com\n").unwrap();
    std::fs::write(
        &main,
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n    origin \"example.test\"\n}\nlisten \"mx\" address=\"127.0.0.1:25\"\naliases file=\"aliases\"\nvirtual file=\"virtual\"\n",
    )
    .unwrap();
    let config = Config::load(&main).unwrap();
    assert_eq!(config.server.origin, "example.test");
    assert_eq!(
        config
            .aliases
            .as_ref()
            .unwrap()
            .lookup("root")
            .unwrap()
            .unwrap(),
        "admin@example.com"
    );
    assert!(
        config
            .virtual_aliases
            .as_ref()
            .unwrap()
            .lookup("@old.test")
            .unwrap()
            .is_some()
    );

    // errors point into the aliases file; programs are refused
    std::fs::write(
        dir.path().join("aliases"),
        "root: admin@example.com\nbackup: |/usr/local/bin/backup\n",
    )
    .unwrap();
    let rendered = render(&Config::load(&main).unwrap_err());
    assert!(rendered.contains("[aliases:2:9]"), "{rendered}");
    assert!(
        rendered.contains("does not deliver to commands"),
        "{rendered}"
    );
}
