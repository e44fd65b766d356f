//! `include`: a configuration in several files.

use super::*;

#[test]
fn include_splits_a_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("mtad.kdl");
    std::fs::create_dir(dir.path().join("policy")).unwrap();
    std::fs::write(
        &main,
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:25\"\ninclude \"policy/relay.kdl\"\n",
    )
    .unwrap();
    // the included file names a set defined in the main file's other include
    std::fs::write(
        dir.path().join("policy/relay.kdl"),
        "include \"sets.kdl\"\nstage \"rcpt\" {\n    accept rcpt-domain=\"relay\"\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("policy/sets.kdl"),
        "domains \"relay\" \"example.test\"\n",
    )
    .unwrap();
    let config = Config::load(&main).unwrap();
    let rules = config.rules(Stage::Rcpt);
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].origin.to_string(), "policy/relay.kdl:3:5");

    // an error inside an included file points into that file
    std::fs::write(
        dir.path().join("policy/sets.kdl"),
        "domains \"relay\" \"example.test\"\nnetwork \"x\" \"10.0.0.0/8\"\n",
    )
    .unwrap();
    let errors = Config::load(&main).unwrap_err();
    let rendered = render(&errors);
    assert!(rendered.contains("[sets.kdl:2:1]"), "{rendered}");
    assert!(rendered.contains("did you mean `networks`?"), "{rendered}");

    // cycles and missing files are errors at the include
    std::fs::write(
        dir.path().join("policy/sets.kdl"),
        "include \"relay.kdl\"\n",
    )
    .unwrap();
    let rendered = render(&Config::load(&main).unwrap_err());
    assert!(rendered.contains("include cycle"), "{rendered}");
    std::fs::remove_file(dir.path().join("policy/sets.kdl")).unwrap();
    let rendered = render(&Config::load(&main).unwrap_err());
    assert!(rendered.contains("cannot read `sets.kdl`"), "{rendered}");
    assert!(rendered.contains("[policy/relay.kdl:1:9]"), "{rendered}");
}

#[test]
fn stage_blocks_concatenate_in_place_across_includes() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("mtad.kdl");
    std::fs::write(
        &main,
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:25\"\nnetworks \"trusted\"\ndomains \"relay\"\nstage \"rcpt\" {\n    reject 550 \"5.7.1\" \"first\"\n}\ninclude \"default.kdl\"\nstage \"rcpt\" {\n    reject 550 \"5.7.1\" \"last\"\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("default.kdl"),
        "stage \"rcpt\" {\n    accept client=\"trusted\"\n}\n",
    )
    .unwrap();
    let config = Config::load(&main).unwrap();
    let origins: Vec<String> = config
        .rules(Stage::Rcpt)
        .iter()
        .map(|r| r.origin.to_string())
        .collect();
    assert!(origins[0].ends_with("/mtad.kdl:9:5"), "{origins:?}");
    assert_eq!(origins[1], "default.kdl:2:5");
    assert!(origins[2].ends_with("/mtad.kdl:13:5"), "{origins:?}");
    // empty sets are allowed: "no trusted networks"
    assert!(config.networks["trusted"].is_empty());
}
