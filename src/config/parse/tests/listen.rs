//! `listen` nodes: PROXY protocol and TLS.

use super::*;

#[test]
fn proxy_protocol_listeners() {
    let config = parse(&format!(
        "{PRELUDE}listen \"lb\" address=\"127.0.0.1:2526\" proxy-protocol=#true proxies=\"lb\"\nnetworks \"lb\" \"10.0.0.5/32\"\n"
    ));
    assert_eq!(config.listeners[1].proxy.as_deref(), Some("lb"));
    assert_eq!(config.listeners[0].proxy, None);
    let (errors, rendered) = check(&format!(
        "{PRELUDE}listen \"a\" address=\"127.0.0.1:2526\" proxy-protocol=#true\n\
         listen \"b\" address=\"127.0.0.1:2527\" proxies=\"lb\"\n\
         listen \"c\" address=\"127.0.0.1:2528\" proxy-protocol=#true proxies=\"lbb\"\n\
         listen \"d\" address=\"127.0.0.1:2529\" proxy-protocol=\"yes\" proxies=\"lb\"\n\
         networks \"lb\" \"10.0.0.5/32\"\n"
    ));
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    for want in [
        "proxy-protocol=#true needs proxies=\"NETWORKS\": the load balancers' addresses",
        "proxies= without proxy-protocol=#true",
        "no networks set named `lbb`",
        "proxy-protocol is #true or #false",
    ] {
        assert!(messages.contains(&want), "{want:?} missing:\n{rendered}");
    }
    assert!(rendered.contains("did you mean `lb`?"), "{rendered}");
}

#[test]
fn tls_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["mx.example.test".into()]).unwrap();
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    let (c, k) = (c.to_str().unwrap(), k.to_str().unwrap());
    let users_file = dir.path().join("users");
    std::fs::write(&users_file, "alice:{PLAIN}secret\n").unwrap();
    let users = format!("users \"u\" file=\"{}\"\n", users_file.display());
    // a server certificate: STARTTLS is offered unless a listener says otherwise; the
    // server block may come after the listeners
    let config = parse(&format!(
        "listen \"mx\" address=\"127.0.0.1:25\"\n\
         listen \"sub\" address=\"127.0.0.1:587\" starttls=\"required\" auth=\"required\"\n\
         listen \"smtps\" address=\"127.0.0.1:465\" implicit-tls=#true auth=\"offered\"\n\
         listen \"plain\" address=\"127.0.0.1:2525\" starttls=\"off\"\n\
         server {{\n hostname \"mx.example.test\"\n spool \"spool\"\n tls-certificate \"{c}\"\n tls-key \"{k}\"\n}}\n{users}"
    ));
    let tls: Vec<ListenerTls> = config.listeners.iter().map(|l| l.tls).collect();
    assert_eq!(
        tls,
        [
            ListenerTls::Offered,
            ListenerTls::Required,
            ListenerTls::Implicit,
            ListenerTls::Off
        ]
    );
    assert_eq!(config.listeners[1].auth, AuthMode::Required);
    assert_eq!(config.listeners[2].auth, AuthMode::Offered);
    // the only users table is the one AUTH uses
    assert_eq!(config.listeners[1].users.as_deref(), Some("u"));
    let pair = CertKey {
        certificate: c.into(),
        key: k.into(),
    };
    assert_eq!(config.listeners[0].certificate.as_ref(), Some(&pair));
    assert_eq!(config.server.tls.as_ref(), Some(&pair));
    // no certificate: plaintext by default
    assert_eq!(parse(PRELUDE).listeners[0].tls, ListenerTls::Off);

    let (errors, rendered) = check(&format!(
        "{PRELUDE}listen \"a\" address=\"127.0.0.1:2526\" starttls=\"required\"\n\
         listen \"b\" address=\"127.0.0.1:2527\" auth=\"required\"\n\
         listen \"c\" address=\"127.0.0.1:2528\" implicit-tls=#true starttls=\"offered\" certificate=\"{c}\" key=\"{k}\"\n\
         listen \"d\" address=\"127.0.0.1:2529\" certificate=\"{c}\"\n\
         listen \"e\" address=\"127.0.0.1:2530\" certificate=\"{k}\" key=\"{k}\"\n\
         listen \"f\" address=\"127.0.0.1:2531\" certificate=\"{c}\" key=\"{c}\"\n\
         listen \"g\" address=\"127.0.0.1:2532\" starttls=\"maybe\" auth=\"yes\"\n"
    ));
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    for want in [
        "listener `a` uses TLS but has no certificate",
        "listener `b` offers AUTH but no TLS: passwords would cross the network in the clear",
        "implicit-tls=#true and starttls= exclude each other",
        "`certificate` and `key` go together",
        "starttls is \"offered\", \"required\" or \"off\", not `maybe`",
        "auth is \"offered\", \"required\" or \"off\", not `yes`",
    ] {
        assert!(messages.contains(&want), "{want:?} missing:\n{rendered}");
    }
    assert!(
        rendered.contains("no CERTIFICATE") && rendered.contains("no PRIVATE KEY"),
        "{rendered}"
    );
    // errors point at the property
    assert!(rendered.contains("mtad.kdl:6:37"), "{rendered}");
    // auth without TLS, knowingly
    let config = parse(&format!(
        "{PRELUDE}listen \"b\" address=\"127.0.0.1:2527\" auth=\"offered\" auth-plaintext=#true\n{users}"
    ));
    // which users table: named, defined, and only with AUTH
    let (errors, rendered) = check(&format!(
        "{PRELUDE}{users}users \"v\" file=\"{}\"\n\
         listen \"b\" address=\"127.0.0.1:2527\" auth=\"offered\" auth-plaintext=#true\n\
         listen \"c\" address=\"127.0.0.1:2528\" auth=\"offered\" auth-plaintext=#true users=\"w\"\n\
         listen \"d\" address=\"127.0.0.1:2529\" users=\"u\"\n",
        users_file.display()
    ));
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    for want in [
        "listener `b` offers AUTH: say which users table",
        "no users table named `w`",
        "users= without auth=\"offered\" or \"required\"",
    ] {
        assert!(messages.contains(&want), "{want:?} missing:\n{rendered}");
    }
    assert!(config.listeners[1].auth_plaintext);
}
