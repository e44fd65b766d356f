//! A TLS client for tests that go where swaks and openssl cannot: a handshake after
//! STARTTLS on a socket the test drove itself, then SMTP inside.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

/// A rustls client that trusts the test CA.
pub fn tls_config(pki_dir: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki_dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

pub fn handshake(pki_dir: &Path, tcp: TcpStream) -> Tls {
    let conn = rustls::ClientConnection::new(tls_config(pki_dir), "localhost".try_into().unwrap())
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

/// One reply (all its lines) from a TLS stream.
pub fn tls_reply(tls: &mut Tls) -> String {
    let mut all = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match tls.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => all.push(byte[0]),
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&all)),
        }
        if all.ends_with(b"\r\n") {
            let text = String::from_utf8_lossy(&all);
            let last = text[..text.len() - 2].rsplit("\r\n").next().unwrap_or("");
            if last.len() >= 4 && last.as_bytes()[3] == b' ' {
                break;
            }
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

pub fn tls_cmd(tls: &mut Tls, line: &str, prefix: &str) -> String {
    tls.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    tls.flush().unwrap();
    let r = tls_reply(tls);
    assert!(r.starts_with(prefix), "{line} -> {r}");
    r
}

/// STARTTLS on a session the test opened (after EHLO), and the handshake.
pub fn starttls(mut c: super::Client, pki_dir: &Path) -> Tls {
    c.cmd("STARTTLS", "220 ");
    handshake(pki_dir, c.into_stream())
}

/// A running mtad whose configuration uses the test PKI (`pki/cert.pem`, `pki/key.pem`,
/// `pki/ca.pem` next to it) and more listeners than `{port}`.
pub struct TlsMtad {
    pub mtad: super::Mtad,
    pub pki: std::path::PathBuf,
    /// The ports filled in for `{port2}`, `{port3}`, ... in order.
    pub ports: Vec<u16>,
}

/// Writes `files` (name, contents) and a fresh test PKI into a new directory, lets
/// `prepare` add what else it needs, fills `{port2}`..`{portN}` (`extra_ports` of
/// them) in `config`, and starts mtad there.
pub fn start_with_pki(
    config: &str,
    files: &[(&str, &str)],
    extra_ports: usize,
    prepare: impl FnOnce(&Path),
) -> TlsMtad {
    let dir = tempfile::tempdir().unwrap();
    let pki = super::peers::Pki::new();
    let pki_dir = dir.path().join("pki");
    std::fs::create_dir(&pki_dir).unwrap();
    for f in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::copy(pki.dir.path().join(f), pki_dir.join(f)).unwrap();
    }
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    prepare(dir.path());
    let ports: Vec<u16> = (0..extra_ports).map(|_| super::free_port()).collect();
    let mut config = config.to_owned();
    for (i, port) in ports.iter().enumerate() {
        config = config.replace(&format!("{{port{}}}", i + 2), &port.to_string());
    }
    let spool = dir.path().join("spool");
    let mtad = super::Mtad::start_in(dir, spool, &config);
    TlsMtad {
        mtad,
        pki: pki_dir,
        ports,
    }
}
