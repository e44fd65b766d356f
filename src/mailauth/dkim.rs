//! DKIM signing of outgoing mail (RFC 6376, RFC 8463): the `dkim` nodes' keys, which
//! of them sign a message, the signatures, and `mtactl dkim keygen`.
//!
//! Every call into mail-auth lives here, so that its API (which changes between
//! releases) is met in one place. The config reads keys through [`Key::from_pem`];
//! the delivery side calls [`sign`] once per attempt, on the bytes it is about to
//! send; the spool is never changed.
//!
//! What is signed is what goes on the wire: the message with every stray CR or LF
//! already made a CRLF ([`normalize`], the same rule as the DATA encoder), so a
//! verifier sees the bytes the signature was made over. Canonicalization is
//! relaxed/relaxed, which survives the header re-folding and trailing-space changes
//! that relays commonly make.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;

/// The headers signed when a `dkim` node names none: Postfix + OpenDKIM's usual set.
/// A header that is absent from a message is simply not listed in its `h=`.
pub const DEFAULT_HEADERS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// The signing algorithm, which follows from the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// `rsa-sha256`.
    Rsa,
    /// `ed25519-sha256` (RFC 8463).
    Ed25519,
}

impl Algorithm {
    /// The `k=` tag of the DNS record.
    pub fn dns_name(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Rsa => "rsa-sha256",
            Algorithm::Ed25519 => "ed25519-sha256",
        })
    }
}

/// A private signing key, read from a PEM file: RSA (PKCS#1 `RSA PRIVATE KEY` or
/// PKCS#8 `PRIVATE KEY`, 2048 to 8192 bits) or Ed25519 (PKCS#8).
pub struct Key {
    inner: KeyInner,
    /// The `p=` value of the DNS record: base64 of the SubjectPublicKeyInfo for RSA,
    /// of the raw 32-byte key for Ed25519.
    public: String,
}

enum KeyInner {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("algorithm", &self.algorithm())
            .field("public", &self.public)
            .finish()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.public == other.public
    }
}

impl Eq for Key {}

impl Key {
    /// Reads a PEM private key; the error says what is wrong with it.
    pub fn from_pem(pem: &[u8]) -> Result<Key, String> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| format!("not a PEM private key ({e})"))?;
        match der {
            PrivateKeyDer::Pkcs1(_) => Self::rsa(der),
            PrivateKeyDer::Pkcs8(ref p8) => {
                match Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der()) {
                    Ok(k) => {
                        let public = b64(&k.public_key());
                        Ok(Key {
                            inner: KeyInner::Ed25519(k),
                            public,
                        })
                    }
                    Err(_) => Self::rsa(der),
                }
            }
            _ => Err("an EC key cannot sign DKIM; use RSA or Ed25519".to_owned()),
        }
    }

    fn rsa(der: PrivateKeyDer<'_>) -> Result<Key, String> {
        let k = RsaKey::<Sha256>::from_key_der(der).map_err(|e| {
            format!("not a usable RSA or Ed25519 key (RSA keys must have 2048 to 8192 bits): {e}")
        })?;
        let public = b64(&rsa_spki(&k.public_key()));
        Ok(Key {
            inner: KeyInner::Rsa(k),
            public,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            KeyInner::Rsa(_) => Algorithm::Rsa,
            KeyInner::Ed25519(_) => Algorithm::Ed25519,
        }
    }

    /// The TXT record to publish at `SELECTOR._domainkey.DOMAIN`, unsplit.
    pub fn dns_record(&self) -> String {
        format!(
            "v=DKIM1; k={}; p={}",
            self.algorithm().dns_name(),
            self.public
        )
    }
}

/// One `dkim` node, compiled: who signs, and with what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signer {
    /// The signing domain (`d=`). Mail whose From domain is this or below it is signed.
    pub domain: String,
    /// The selector (`s=`): the key's DNS name is `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// The headers to sign, in order.
    pub headers: Vec<String>,
    /// `always=#true`: sign every message, whatever its sender (a relay's own
    /// signature, next to the sender domain's).
    pub always: bool,
    pub key: Arc<Key>,
}

impl Signer {
    fn covers(&self, domain: &str) -> bool {
        domain == self.domain
            || domain
                .strip_suffix(self.domain.as_str())
                .is_some_and(|rest| rest.ends_with('.'))
    }
}

/// Which signers sign a message from `domain` (the From header's domain, else the
/// envelope sender's; lower case): the one whose domain is the closest match (the
/// domain itself, else its nearest parent), or the one for `route` when the route
/// names one (`dkim="DOMAIN"`), then every `always` signer, each once.
pub fn signers_for<'s>(
    signers: &'s [Signer],
    domain: &str,
    route: Option<&str>,
) -> Vec<&'s Signer> {
    let mut chosen: Vec<&Signer> = Vec::new();
    let best = match route {
        Some(r) => signers.iter().find(|s| !s.always && s.domain == r),
        None => signers
            .iter()
            .filter(|s| !s.always && s.covers(domain))
            .max_by_key(|s| s.domain.len()),
    };
    if let Some(best) = best {
        chosen.push(best);
    }
    for s in signers.iter().filter(|s| s.always) {
        if !chosen
            .iter()
            .any(|c| c.domain == s.domain && c.selector == s.selector)
        {
            chosen.push(s);
        }
    }
    chosen
}

/// The domain of the message's first From header, lower case, or None.
pub fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::new().parse_headers(message)?;
    let from = parsed.from()?.first()?.address()?;
    let (_, domain) = from.rsplit_once('@')?;
    Some(domain.trim_end_matches('>').to_ascii_lowercase())
}

/// The message as it goes on the wire: a bare CR or LF becomes CRLF, and the last
/// line ends with CRLF (like `BodyEncoder` in delivery, without dot-stuffing).
pub fn normalize(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 2);
    let mut i = 0;
    while i < message.len() {
        match message[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if message.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Signs `message` with each of `signers`: returns the message normalized
/// ([`normalize`]) with one `DKIM-Signature` header per signer in front, in order
/// (the first signer's on top), and the signers that signed. A signer that fails is
/// logged and left out: mail is never held back for want of a signature.
pub fn sign<'s>(signers: &[&'s Signer], message: &[u8]) -> (Vec<u8>, Vec<&'s Signer>) {
    let message = normalize(message);
    let mut headers = String::new();
    let mut by = Vec::with_capacity(signers.len());
    for s in signers {
        match sign_one(s, &message) {
            Ok(h) => {
                headers.push_str(&h);
                by.push(*s);
            }
            Err(e) => {
                tracing::error!(domain = %s.domain, selector = %s.selector, error = %e, "DKIM signing failed; sending without this signature")
            }
        }
    }
    let mut out = Vec::with_capacity(headers.len() + message.len());
    out.extend_from_slice(headers.as_bytes());
    out.extend_from_slice(&message);
    (out, by)
}

fn sign_one(s: &Signer, message: &[u8]) -> Result<String, mail_auth::Error> {
    fn build<T: mail_auth::common::crypto::SigningKey>(key: T, s: &Signer) -> DkimSigner<T, Done> {
        DkimSigner::from_key(key)
            .domain(s.domain.as_str())
            .selector(s.selector.as_str())
            .headers(s.headers.iter().map(String::as_str))
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
    }
    let signature = match &s.key.inner {
        KeyInner::Rsa(k) => build(RefKey(k), s).sign(message)?,
        KeyInner::Ed25519(k) => build(RefKey(k), s).sign(message)?,
    };
    Ok(signature.to_header())
}

/// ARC-seals `message` (RFC 8617) as `s`'s domain and selector with its key, over
/// `s.headers` (relaxed/relaxed), continuing the chain `arc` (the result of verifying
/// the message's ARC sets) with `results` as the ARC-Authentication-Results: the
/// three headers, CRLF-terminated, to put on top. An error when the chain cannot be
/// sealed (it ended in `cv=fail`) or none of the headers to sign is present.
pub(crate) fn arc_seal(
    s: &Signer,
    message: &mail_auth::AuthenticatedMessage<'_>,
    results: &mail_auth::AuthenticationResults<'_>,
    arc: &mail_auth::ArcOutput<'_>,
) -> Result<String, mail_auth::Error> {
    use mail_auth::arc::ArcSealer;
    fn seal<T: mail_auth::common::crypto::SigningKey<Hasher = Sha256>>(
        key: T,
        s: &Signer,
        message: &mail_auth::AuthenticatedMessage<'_>,
        results: &mail_auth::AuthenticationResults<'_>,
        arc: &mail_auth::ArcOutput<'_>,
    ) -> Result<String, mail_auth::Error> {
        let set = ArcSealer::from_key(key)
            .domain(s.domain.as_str())
            .selector(s.selector.as_str())
            .headers(s.headers.iter().map(String::as_str))
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
            .seal(message, results, arc)?;
        Ok(set.to_header())
    }
    match &s.key.inner {
        KeyInner::Rsa(k) => seal(RefKey(k), s, message, results, arc),
        KeyInner::Ed25519(k) => seal(RefKey(k), s, message, results, arc),
    }
}

/// A borrowed key that signs like the key itself, so a [`DkimSigner`] can be built
/// per message without copying the key.
struct RefKey<'k, K>(&'k K);

impl<K: mail_auth::common::crypto::SigningKey> mail_auth::common::crypto::SigningKey
    for RefKey<'_, K>
{
    type Hasher = K::Hasher;

    fn sign(&self, input: impl mail_auth::common::headers::Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        self.0.algorithm()
    }
}

/// A new key pair for `mtactl dkim keygen`: the private key as PEM (PKCS#1 for RSA,
/// PKCS#8 for Ed25519) and the key read back, for its DNS record.
pub fn generate(algorithm: Algorithm, bits: usize) -> Result<(String, Key), String> {
    use mail_auth::dkim::generate::DkimKeyPair;
    let (label, pair) = match algorithm {
        Algorithm::Rsa => ("RSA PRIVATE KEY", DkimKeyPair::generate_rsa(bits)),
        Algorithm::Ed25519 => ("PRIVATE KEY", DkimKeyPair::generate_ed25519()),
    };
    let pair = pair.map_err(|e| format!("cannot generate the key: {e}"))?;
    let pem = pem(label, pair.private_key());
    let key = Key::from_pem(pem.as_bytes())?;
    Ok((pem, key))
}

/// The TXT record's text split into strings of at most 255 bytes, quoted, as a zone
/// file wants them.
pub fn txt_strings(record: &str) -> String {
    record
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn pem(label: &str, der: &[u8]) -> String {
    let text = b64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A PKCS#1 RSAPublicKey wrapped in a SubjectPublicKeyInfo, the form DKIM's `p=`
/// takes (RFC 6376 §3.6.1).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    fn tlv(tag: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(tag);
        let n = body.len();
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let len = n.to_be_bytes();
            let skip = len.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (len.len() - skip) as u8);
            out.extend_from_slice(&len[skip..]);
        }
        out.extend_from_slice(body);
    }
    // SEQUENCE { OID 1.2.840.113549.1.1.1 (rsaEncryption), NULL }
    const ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0u8];
    bits.extend_from_slice(pkcs1);
    let mut body = ALGORITHM.to_vec();
    tlv(0x03, &bits, &mut body);
    let mut out = Vec::new();
    tlv(0x30, &body, &mut out);
    out
}

#[cfg(test)]
mod tests;
