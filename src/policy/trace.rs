//! The trace header mtad adds at the top of every message it receives (RFC 5321
//! §4.4), as the session writes it before the data stage runs (so content checks and
//! hop counting see it) and as a dry run shows it.

use std::net::IpAddr;

use crate::config::sanitize_text;
use crate::net::tls::TlsInfo;

/// The `with` of Received: `ESMTP`/`SMTP`, `UTF8SMTP` for SMTPUTF8 transactions, and
/// `S` for TLS and `A` for an authenticated client after it (RFC 3848, RFC 6531).
pub fn protocol(esmtp: bool, smtputf8: bool, tls: bool, auth: bool) -> String {
    let base = match (esmtp, smtputf8) {
        (true, true) => "UTF8SMTP",
        (true, false) => "ESMTP",
        (false, _) => return "SMTP".to_owned(),
    };
    let mut p = base.to_owned();
    if tls {
        p.push('S');
    }
    if auth {
        p.push('A');
    }
    p
}

pub struct ReceivedInfo<'a> {
    pub helo: &'a str,
    pub ip: IpAddr,
    pub hostname: &'a str,
    pub protocol: &'a str,
    pub tls: Option<&'a TlsInfo>,
    /// Recorded as Postfix's `smtpd_sasl_authenticated_header = yes` does.
    pub auth_user: Option<&'a str>,
    /// The queue id the message gets.
    pub id: &'a str,
    /// Named only when there is exactly one recipient, as Postfix does: a list of
    /// recipients in a header would disclose the Bcc's.
    pub rcpt: Option<&'a str>,
}

/// The trace header (RFC 5321 §4.4). Everything taken from the client is sanitised, so
/// the header stays one header.
pub fn received_header(info: ReceivedInfo<'_>) -> String {
    let helo = sanitize_text(info.helo, 255).replace(['(', ')'], "?");
    let ip = match info.ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("IPv6:{v6}"),
        },
    };
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S +0000");
    let mut header = format!("Received: from {helo} ([{ip}])\r\n");
    if let Some(tls) = info.tls {
        header.push_str(&format!(
            "\t(using {} with cipher {})\r\n",
            tls.protocol, tls.cipher
        ));
    }
    if let Some(user) = info.auth_user {
        let user = sanitize_text(user, 255).replace(['(', ')'], "?");
        header.push_str(&format!("\t(Authenticated sender: {user})\r\n"));
    }
    header.push_str(&format!(
        "\tby {} with {} id {}",
        info.hostname, info.protocol, info.id
    ));
    if let Some(rcpt) = info.rcpt {
        let rcpt = sanitize_text(rcpt, 256).replace(['<', '>'], "?");
        header.push_str(&format!("\r\n\tfor <{rcpt}>"));
    }
    header.push_str(&format!("; {date}\r\n"));
    header
}

/// The trace header of a message submitted through `sendmail`, as Postfix's pickup
/// writes it: `Received: by HOST (mtad, from userid UID)` with the queue id and date.
pub fn local_received_header(hostname: &str, uid: u32, id: &str) -> String {
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S +0000");
    format!("Received: by {hostname} (mtad, from userid {uid})\r\n\tid {id}; {date}\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_header_is_one_header() {
        let h = received_header(ReceivedInfo {
            helo: "evil\r\nX-Injected: yes",
            ip: "127.0.0.1".parse().unwrap(),
            hostname: "mx.example.test",
            protocol: "ESMTP",
            tls: None,
            auth_user: None,
            id: "00000000000000AB",
            rcpt: Some("a@b.test\r\nBcc: x"),
        });
        assert!(h.starts_with("Received: from evil??X-Injected: yes ([127.0.0.1])\r\n\tby mx.example.test with ESMTP id 00000000000000AB\r\n\tfor <a@b.test??Bcc: x>; "));
        // every line after the first is a continuation line
        for line in h.trim_end_matches("\r\n").split("\r\n").skip(1) {
            assert!(line.starts_with('\t'), "{line:?}");
        }
    }

    #[test]
    fn received_records_tls_and_the_authenticated_user() {
        let tls = TlsInfo::from_rustls("TLSv1_3", "TLS13_AES_256_GCM_SHA384");
        let h = received_header(ReceivedInfo {
            helo: "client.test",
            ip: "192.0.2.1".parse().unwrap(),
            hostname: "mx.example.test",
            protocol: &protocol(true, false, true, true),
            tls: Some(&tls),
            auth_user: Some("alice\r\n(x)"),
            id: "0000000000000001",
            rcpt: None,
        });
        assert!(
            h.starts_with(
                "Received: from client.test ([192.0.2.1])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n\t(Authenticated sender: alice???x?)\r\n\tby mx.example.test with ESMTPSA id "
            ),
            "{h}"
        );
        assert_eq!(protocol(true, true, true, false), "UTF8SMTPS");
        assert_eq!(protocol(false, false, true, true), "SMTP");
    }
}
