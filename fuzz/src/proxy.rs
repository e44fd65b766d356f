//! The PROXY protocol header (src/smtp/proxy.rs): `read_header` reads from the
//! connection exactly as a listener with `proxy-protocol` does (v1 byte by byte up to
//! CRLF, v2 by its announced length), here from the fuzz input; `parse_v1` and
//! `parse_v2` also get the input whole. Whatever `read_header` accepted, it consumed
//! no more than the header: the bytes after it are the client's SMTP.

use std::sync::OnceLock;

use mtad::smtp::proxy::{Proxied, parse_v1, parse_v2, read_header};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

pub fn run(data: &[u8]) {
    let mut stream: &[u8] = data;
    let result = runtime().block_on(read_header(&mut stream));
    if let Ok(proxied) = &result {
        let used = data.len() - stream.len();
        assert!(used <= 16 + 65_535, "read past any header");
        // the header alone parses to the same thing
        let header = &data[..used];
        let again = if header.first() == Some(&b'P') {
            parse_v1(header)
        } else {
            parse_v2(header)
        };
        match (again, proxied) {
            (Ok(Proxied::Client(a)), Proxied::Client(b)) => assert_eq!(a, *b),
            (Ok(Proxied::Unknown), Proxied::Unknown) => {}
            (again, _) => panic!("read_header gave {proxied:?}, the header alone {again:?}"),
        }
        if let Proxied::Client(addr) = proxied {
            let _ = (*proxied).address();
            let _ = addr.ip().to_canonical();
        }
    }
    let _ = parse_v1(data);
    let _ = parse_v2(data);
}
