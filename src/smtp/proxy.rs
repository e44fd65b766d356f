//! The PROXY protocol (HAProxy's specification, versions 1 and 2) on listeners that
//! enable it: the load balancer in front of mtad says who the client really is.
//!
//! Strict, as the specification asks: the header must come first, whole, before any
//! banner; a connection without one, with a malformed one, or from an address that is
//! not a configured proxy is closed without a word. Nothing is guessed. The header is
//! read byte by byte (v1) or by its announced length (v2), so nothing the client sends
//! after it is consumed here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ppp::{v1, v2};

use super::server::canonical_ip;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long the proxy has to send the header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest v1 header, CRLF included (the specification's 107 bytes).
const V1_MAX: usize = 107;
/// v2: the 12-byte signature, version/command, family, 2-byte length.
const V2_PREFIX: usize = 16;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v2 address block accepted (addresses and TLVs).
const V2_MAX_LEN: usize = 2048;

/// Who the proxy says the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// A proxied TCP connection from this client.
    Client(SocketAddr),
    /// The proxy speaking for itself (v2 LOCAL, a health check) or a v1 `UNKNOWN`
    /// connection: no client address. Such a session runs as `0.0.0.0`, which no
    /// network set contains unless written so.
    Unknown,
}

impl Proxied {
    /// The address the session runs as.
    pub fn address(self) -> SocketAddr {
        match self {
            Proxied::Client(a) => a,
            Proxied::Unknown => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    #[error("the PROXY protocol header did not arrive in time")]
    Timeout,
    #[error("connection closed before the PROXY protocol header was complete")]
    Closed,
}

/// Reads and parses the header at the start of `stream`.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Proxied, ProxyError> {
    match tokio::time::timeout(HEADER_TIMEOUT, read(stream)).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::Timeout),
    }
}

async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Proxied, ProxyError> {
    let mut buf = vec![0u8; 1];
    read_exact(stream, &mut buf).await?;
    match buf[0] {
        b'P' => {
            // v1: up to CRLF, at most 107 bytes
            while !buf.ends_with(b"\r\n") {
                if buf.len() >= V1_MAX {
                    return Err(ProxyError::Malformed(
                        "v1 header longer than 107 bytes".into(),
                    ));
                }
                let mut b = [0u8; 1];
                read_exact(stream, &mut b).await?;
                buf.push(b[0]);
            }
            parse_v1(&buf)
        }
        b'\r' => {
            buf.resize(V2_PREFIX, 0);
            read_exact(stream, &mut buf[1..]).await?;
            if &buf[..12] != V2_SIGNATURE {
                return Err(ProxyError::Missing);
            }
            let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
            if len > V2_MAX_LEN {
                return Err(ProxyError::Malformed(format!(
                    "v2 address block of {len} bytes"
                )));
            }
            buf.resize(V2_PREFIX + len, 0);
            read_exact(stream, &mut buf[V2_PREFIX..]).await?;
            parse_v2(&buf)
        }
        _ => Err(ProxyError::Missing),
    }
}

async fn read_exact<S: AsyncRead + Unpin>(s: &mut S, buf: &mut [u8]) -> Result<(), ProxyError> {
    match s.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(_) => Err(ProxyError::Closed),
    }
}

/// A whole v1 header, CRLF included.
pub fn parse_v1(header: &[u8]) -> Result<Proxied, ProxyError> {
    let parsed =
        v1::Header::try_from(header).map_err(|e| ProxyError::Malformed(format!("v1: {e}")))?;
    if parsed.header.len() != header.len() {
        return Err(ProxyError::Malformed("v1: trailing bytes".into()));
    }
    Ok(match parsed.addresses {
        v1::Addresses::Tcp4(a) => {
            Proxied::Client(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        v1::Addresses::Tcp6(a) => Proxied::Client(SocketAddr::new(
            canonical_ip(IpAddr::V6(a.source_address)),
            a.source_port,
        )),
        v1::Addresses::Unknown => Proxied::Unknown,
    })
}

/// A whole v2 header.
pub fn parse_v2(header: &[u8]) -> Result<Proxied, ProxyError> {
    let parsed =
        v2::Header::try_from(header).map_err(|e| ProxyError::Malformed(format!("v2: {e}")))?;
    if parsed.command == v2::Command::Local {
        return Ok(Proxied::Unknown);
    }
    match parsed.addresses {
        v2::Addresses::IPv4(a) => Ok(Proxied::Client(SocketAddr::new(
            IpAddr::V4(a.source_address),
            a.source_port,
        ))),
        v2::Addresses::IPv6(a) => Ok(Proxied::Client(SocketAddr::new(
            canonical_ip(IpAddr::V6(a.source_address)),
            a.source_port,
        ))),
        v2::Addresses::Unspecified => Ok(Proxied::Unknown),
        v2::Addresses::Unix(_) => Err(ProxyError::Malformed(
            "v2: a unix socket address is not a client address".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    async fn read_all(bytes: &[u8]) -> (Result<Proxied, ProxyError>, Vec<u8>) {
        let mut cursor = std::io::Cursor::new(bytes.to_vec());
        let r = read_header(&mut cursor).await;
        let pos = cursor.position() as usize;
        (r, bytes[pos..].to_vec())
    }

    #[tokio::test]
    async fn v1_and_v2_headers_and_nothing_more_is_read() {
        let (r, rest) = read_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 25\r\nEHLO x\r\n").await;
        assert_eq!(r, Ok(Proxied::Client("192.0.2.7:40000".parse().unwrap())));
        assert_eq!(rest, b"EHLO x\r\n");
        let (r, _) = read_all(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n").await;
        assert_eq!(
            r,
            Ok(Proxied::Client("[2001:db8::7]:40000".parse().unwrap()))
        );
        let (r, _) = read_all(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(r, Ok(Proxied::Unknown));

        let mut v4 = Vec::new();
        v4.extend_from_slice(&[192, 0, 2, 9, 10, 0, 0, 1]);
        v4.extend_from_slice(&50000u16.to_be_bytes());
        v4.extend_from_slice(&25u16.to_be_bytes());
        let mut bytes = v2_header(1, 0x11, &v4);
        bytes.extend_from_slice(b"QUIT\r\n");
        let (r, rest) = read_all(&bytes).await;
        assert_eq!(r, Ok(Proxied::Client("192.0.2.9:50000".parse().unwrap())));
        assert_eq!(rest, b"QUIT\r\n");
        // LOCAL: the proxy's own health check
        let (r, _) = read_all(&v2_header(0, 0x00, &[])).await;
        assert_eq!(r, Ok(Proxied::Unknown));
        assert_eq!(Proxied::Unknown.address().ip().to_string(), "0.0.0.0");
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bad in [
            &b"EHLO client.test\r\n"[..],
            b"PROXY TCP4 192.0.2.7\r\n",
            b"PROXY TCP4 999.0.2.7 10.0.0.1 40000 25\r\n",
            b"PROXY TCP9 192.0.2.7 10.0.0.1 40000 25\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 25\n",
            b"\r\n\r\n\0\r\nQUIX\n\x21\x11\0\x0c",
            b"",
        ] {
            let (r, _) = read_all(bad).await;
            assert!(
                r.is_err(),
                "{:?} accepted: {r:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // too long v1, wrong version nibble, truncated v2, unix addresses
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert!(read_all(long.as_bytes()).await.0.is_err());
        let mut wrong = v2_header(1, 0x11, &[0; 12]);
        wrong[12] = 0x31;
        assert!(read_all(&wrong).await.0.is_err());
        let truncated = v2_header(1, 0x11, &[192, 0, 2]);
        assert!(read_all(&truncated).await.0.is_err());
        let unix = v2_header(1, 0x31, &[0; 216]);
        assert!(read_all(&unix).await.0.is_err());
        let mut huge = v2_header(1, 0x11, &[]);
        huge[14..16].copy_from_slice(&60000u16.to_be_bytes());
        assert!(matches!(
            read_all(&huge).await.0,
            Err(ProxyError::Malformed(_))
        ));
    }
}
