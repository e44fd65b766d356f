//! `dkim` and `dkim-internal` nodes, and the routes that name a signer.

use super::*;

#[test]
fn dkim_keys_are_read_and_checked_with_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, _) =
        crate::mailauth::dkim::generate(crate::mailauth::dkim::Algorithm::Rsa, 2048).unwrap();
    let (ed, _) =
        crate::mailauth::dkim::generate(crate::mailauth::dkim::Algorithm::Ed25519, 0).unwrap();
    std::fs::write(dir.path().join("rsa.key"), rsa).unwrap();
    std::fs::write(dir.path().join("ed.key"), ed).unwrap();
    std::fs::write(dir.path().join("bad.key"), "not a key\n").unwrap();
    let load = |nodes: &str| {
        let path = dir.path().join("mtad.kdl");
        std::fs::write(&path, format!("{PRELUDE}{nodes}")).unwrap();
        Config::load(&path)
    };
    let config = load(
        "dkim \"Example.COM\" selector=\"s2026\" key=\"rsa.key\"\n\
         dkim \"relay.test\" selector=\"ed\" key=\"ed.key\" headers=\"From:Subject\" always=#true\n",
    )
    .unwrap();
    assert_eq!(config.dkim.len(), 2);
    let (a, b) = (&config.dkim[0], &config.dkim[1]);
    assert_eq!(
        (a.domain.as_str(), a.selector.as_str(), a.always),
        ("example.com", "s2026", false)
    );
    assert_eq!(a.key.algorithm(), crate::mailauth::dkim::Algorithm::Rsa);
    assert_eq!(a.headers[0], "From");
    assert_eq!(
        a.headers.len(),
        crate::mailauth::dkim::DEFAULT_HEADERS.len()
    );
    assert_eq!(
        (b.key.algorithm(), b.always),
        (crate::mailauth::dkim::Algorithm::Ed25519, true)
    );
    assert_eq!(b.headers, ["From", "Subject"]);
    // the keys are part of the policy's revision
    assert!(
        config.sources.names().any(|n| n == "rsa.key"),
        "{:?}",
        config.sources.names().collect::<Vec<_>>()
    );

    let errors = load(
        "dkim \"example.com\" selector=\"s1\" key=\"missing.key\"\n\
         dkim \"example.org\" selector=\"s1\" key=\"bad.key\"\n\
         dkim \"example.net\" selector=\"bad selector\" key=\"rsa.key\"\n\
         dkim \"example.edu\" key=\"rsa.key\"\n\
         dkim \"example.info\" selector=\"s1\" key=\"rsa.key\" headers=\"To:Subject\"\n\
         dkim \"nodot\" selector=\"s1\" key=\"rsa.key\"\n",
    )
    .unwrap_err();
    let rendered = render(&errors);
    let at = |needle: &str| {
        errors
            .errors
            .iter()
            .find(|e| e.message.contains(needle))
            .and_then(|e| e.location.clone())
            .map(|o| (o.line, o.column))
            .unwrap_or_else(|| panic!("no error about {needle}: {rendered}"))
    };
    assert_eq!(at("cannot read"), (6, 34), "{rendered}");
    assert_eq!(at("bad.key: not a PEM private key"), (7, 34), "{rendered}");
    assert_eq!(at("not a valid selector"), (8, 20), "{rendered}");
    assert_eq!(at("needs selector"), (9, 1), "{rendered}");
    assert_eq!(at("must include From"), (10, 49), "{rendered}");
    assert_eq!(at("not a domain name"), (11, 6), "{rendered}");
    assert_eq!(errors.errors.len(), 6, "{rendered}");
}

#[test]
fn a_route_names_its_dkim_signer_and_an_undefined_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ed, _) =
        crate::mailauth::dkim::generate(crate::mailauth::dkim::Algorithm::Ed25519, 0).unwrap();
    std::fs::write(dir.path().join("ed.key"), ed).unwrap();
    let load = |nodes: &str| {
        let path = dir.path().join("mtad.kdl");
        std::fs::write(&path, format!("{PRELUDE}{nodes}")).unwrap();
        Config::load(&path)
    };
    // the route may come before the node it names
    let config = load(
        "stage \"route\" {\n    transport \"*\" \"smtp:[192.0.2.1]\" dkim=\"Example.ORG\"\n}\n\
         dkim \"example.org\" selector=\"ed\" key=\"ed.key\"\n",
    )
    .unwrap();
    let options = &config.rules(Stage::Route)[0].route;
    assert_eq!(options.dkim.as_deref(), Some("example.org"));
    assert_eq!(options.to_string(), "dkim=\"example.org\"");

    let errors = load(
        "stage \"route\" {\n    transport \"*\" \"smtp:[192.0.2.1]\" dkim=\"example.net\"\n}\n\
         dkim \"example.org\" selector=\"ed\" key=\"ed.key\"\n",
    )
    .unwrap_err();
    let rendered = render(&errors);
    assert_eq!(errors.errors.len(), 1, "{rendered}");
    assert!(
        rendered.contains("no `dkim` node for example.net"),
        "{rendered}"
    );
    assert_eq!(
        errors.errors[0].location.as_ref().map(|o| o.line),
        Some(7),
        "{rendered}"
    );
}

#[test]
fn dkim_internal_and_dkim_sign() {
    let config = parse(&format!(
        "{PRELUDE}networks \"lan\" \"10.0.0.0/24\"\ndkim-internal \"lan\" \"192.0.2.0/24\"\nstage \"route\" {{\n    transport \"*\" \"smtp:[relay.test]\" dkim-sign=\"always\"\n}}\n"
    ));
    assert_eq!(
        config.dkim_internal,
        Some(vec![
            ClientRef::Set("lan".into()),
            ClientRef::Net("192.0.2.0/24".parse().unwrap())
        ])
    );
    let route = &config.rules(Stage::Route)[0].route;
    assert_eq!(
        route.dkim_sign,
        Some(crate::config::route::DkimSign::Always)
    );
    assert_eq!(route.to_string(), "dkim-sign=\"always\"");
    let (_, text) = check(&format!(
        "{PRELUDE}dkim-internal \"nowhere\"\nstage \"route\" {{\n    transport \"*\" \"smtp:[relay.test]\" dkim-sign=\"sometimes\"\n}}\n"
    ));
    assert!(text.contains("mtad.kdl:6:"), "{text}");
    assert!(text.contains("nowhere"), "{text}");
    assert!(
        text.contains("mtad.kdl:8:") && text.contains("unknown dkim-sign `sometimes`"),
        "{text}"
    );
}
