//! The server side of SASL PLAIN (RFC 4616) and LOGIN, as SMTP AUTH (RFC 4954)
//! carries them: base64 lines in, credentials out.
//!
//! ```text
//! C: AUTH PLAIN AGFsaWNlAHNlY3JldA==          ← decode_plain("AGFsaWNlAHNlY3JldA==")
//! C: AUTH LOGIN
//! S: 334 VXNlcm5hbWU6                         ← LOGIN_USERNAME_CHALLENGE
//! C: YWxpY2U=                                 ← decode_login_username(..)
//! S: 334 UGFzc3dvcmQ6                         ← LOGIN_PASSWORD_CHALLENGE
//! C: c2VjcmV0                                 ← decode_login_password(..)
//! ```
//!
//! A client may answer any challenge with `*` to cancel ([`SaslError::Cancelled`]).
//! What to answer for each error is on [`SaslError`]. Passwords are bytes (RFC 4616
//! allows any UTF-8, clients send what they have); they are wrapped in [`Password`],
//! whose `Debug` never shows them and whose memory is wiped on drop.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroize;

/// The first `334` challenge of AUTH LOGIN: base64 of `Username:`.
pub const LOGIN_USERNAME_CHALLENGE: &str = "VXNlcm5hbWU6";
/// The second `334` challenge of AUTH LOGIN: base64 of `Password:`.
pub const LOGIN_PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// The longest authentication or authorization identity accepted, in bytes (RFC 4616
/// asks servers to take at least 255).
pub const MAX_IDENTITY_LEN: usize = 255;
/// The longest password accepted, in bytes: room for passphrases, not for abuse.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Why a SASL response was refused. The SMTP answers in the variant docs follow
/// RFC 4954 (and what Postfix sends).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// Not base64, or base64 of something that is not the mechanism's message
    /// (missing or extra NULs, an empty or non-UTF-8 identity, too long).
    /// Answer `501 5.5.2 Cannot decode response`; the attempt counts as a failure.
    #[error("malformed SASL response: {0}")]
    Malformed(&'static str),
    /// PLAIN with an authorization identity other than the authentication identity:
    /// acting for someone else is not supported. Answer `535 5.7.8 Authentication
    /// credentials invalid` (no hint about which part was wrong).
    #[error("authorization identity differs from the authentication identity")]
    AuthzidMismatch,
    /// The client answered `*` (RFC 4954 section 4). Answer `501 5.7.0 Authentication
    /// cancelled`.
    #[error("authentication cancelled by the client")]
    Cancelled,
}

/// A password as received: bytes, never shown by `Debug`, zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Vec<u8>);

impl Password {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// What a PLAIN response carries once checked: the user (authentication identity)
/// and the password. An authorization identity, when sent, equals `user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Password,
}

/// Decodes one response line (without CRLF): `*` cancels, anything else must be
/// base64. The decoded bytes are zeroed if they turn out malformed.
fn decode_line(line: &str, max: usize) -> Result<Vec<u8>, SaslError> {
    let line = line.trim_matches(|c| c == ' ' || c == '\t');
    if line == "*" {
        return Err(SaslError::Cancelled);
    }
    // base64 grows 3 bytes into 4: refuse before decoding what cannot fit
    if line.len() > max.div_ceil(3) * 4 {
        return Err(SaslError::Malformed("response too long"));
    }
    STANDARD
        .decode(line)
        .map_err(|_| SaslError::Malformed("not valid base64"))
}

/// An identity: UTF-8, non-empty, at most [`MAX_IDENTITY_LEN`] bytes, no control
/// characters.
fn identity(bytes: &[u8]) -> Result<String, SaslError> {
    if bytes.is_empty() {
        return Err(SaslError::Malformed("empty user name"));
    }
    if bytes.len() > MAX_IDENTITY_LEN {
        return Err(SaslError::Malformed("user name too long"));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| SaslError::Malformed("user name is not UTF-8"))?;
    if text.chars().any(char::is_control) {
        return Err(SaslError::Malformed("control character in user name"));
    }
    Ok(text.to_owned())
}

/// Decodes an AUTH PLAIN response (the initial response or the answer to an empty
/// `334 ` challenge): base64 of `authzid NUL authcid NUL passwd` (RFC 4616).
///
/// The authorization identity must be empty or equal to the authentication identity
/// ([`SaslError::AuthzidMismatch`] otherwise); the authentication identity must be a
/// non-empty UTF-8 name; the password may be any bytes but NUL, and may be empty (the
/// password check then fails, as it should).
pub fn decode_plain(line: &str) -> Result<Credentials, SaslError> {
    let max = MAX_IDENTITY_LEN * 2 + MAX_PASSWORD_LEN + 2;
    let mut message = decode_line(line, max)?;
    let result = split_plain(&message);
    message.zeroize();
    result
}

fn split_plain(message: &[u8]) -> Result<Credentials, SaslError> {
    let mut parts = message.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed(
            "expected authzid NUL authcid NUL password",
        ));
    };
    if passwd.contains(&0) {
        return Err(SaslError::Malformed("NUL in password"));
    }
    if passwd.len() > MAX_PASSWORD_LEN {
        return Err(SaslError::Malformed("password too long"));
    }
    let user = identity(authcid)?;
    if !authzid.is_empty() && authzid != authcid {
        if authzid.len() > MAX_IDENTITY_LEN {
            return Err(SaslError::Malformed("authorization identity too long"));
        }
        return Err(SaslError::AuthzidMismatch);
    }
    Ok(Credentials {
        user,
        password: Password::new(passwd.to_vec()),
    })
}

/// Decodes the answer to [`LOGIN_USERNAME_CHALLENGE`] (or LOGIN's initial response):
/// a non-empty UTF-8 user name.
pub fn decode_login_username(line: &str) -> Result<String, SaslError> {
    let mut bytes = decode_line(line, MAX_IDENTITY_LEN)?;
    let result = identity(&bytes);
    bytes.zeroize();
    result
}

/// Decodes the answer to [`LOGIN_PASSWORD_CHALLENGE`]: any bytes but NUL, possibly
/// empty.
pub fn decode_login_password(line: &str) -> Result<Password, SaslError> {
    let bytes = Password::new(decode_line(line, MAX_PASSWORD_LEN)?);
    if bytes.as_bytes().len() > MAX_PASSWORD_LEN {
        return Err(SaslError::Malformed("password too long"));
    }
    if bytes.as_bytes().contains(&0) {
        return Err(SaslError::Malformed("NUL in password"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    #[test]
    fn plain_without_authzid() {
        // what `swaks --auth PLAIN` and Thunderbird send
        let got = decode_plain("AGFsaWNlAHNlY3JldA==").unwrap();
        assert_eq!(got.user, "alice");
        assert_eq!(got.password.as_bytes(), b"secret");
    }

    #[test]
    fn plain_with_the_same_authzid() {
        let got =
            decode_plain(&b64(b"alice@example.test\0alice@example.test\0p\xc3\xa4ss")).unwrap();
        assert_eq!(got.user, "alice@example.test");
        assert_eq!(got.password.as_bytes(), "päss".as_bytes());
    }

    #[test]
    fn plain_authzid_for_someone_else() {
        assert_eq!(
            decode_plain(&b64(b"bob\0alice\0secret")),
            Err(SaslError::AuthzidMismatch)
        );
    }

    #[test]
    fn plain_malformed() {
        for (line, why) in [
            ("not base64!", "not valid base64"),
            ("AGFsaWNl", "expected authzid NUL authcid NUL password"), // "\0alice"
            ("YWxpY2U=", "expected authzid NUL authcid NUL password"), // "alice"
            ("=", "not valid base64"),
            ("", "expected authzid NUL authcid NUL password"),
        ] {
            assert_eq!(decode_plain(line), Err(SaslError::Malformed(why)), "{line}");
        }
        let cases: [(&[u8], &str); 5] = [
            (b"\0\0secret", "empty user name"),
            (b"\0alice\0sec\0ret", "NUL in password"),
            (b"\0al\x01ice\0secret", "control character in user name"),
            (b"\0\xff\xfe\0secret", "user name is not UTF-8"),
            (&[b'x'; 3000], "response too long"),
        ];
        for (message, why) in cases {
            assert_eq!(
                decode_plain(&b64(message)),
                Err(SaslError::Malformed(why)),
                "{why}"
            );
        }
        let long_user = [b"\0".as_slice(), &[b'u'; 256], b"\0pw"].concat();
        assert_eq!(
            decode_plain(&b64(&long_user)),
            Err(SaslError::Malformed("user name too long"))
        );
        let long_password = [b"\0alice\0".as_slice(), &[b'p'; 1025]].concat();
        assert_eq!(
            decode_plain(&b64(&long_password)),
            Err(SaslError::Malformed("password too long"))
        );
    }

    #[test]
    fn plain_empty_password_decodes() {
        // refusing it is the password check's job, with the same answer as a wrong one
        let got = decode_plain(&b64(b"\0alice\0")).unwrap();
        assert_eq!(got.password.as_bytes(), b"");
    }

    #[test]
    fn cancel() {
        assert_eq!(decode_plain("*"), Err(SaslError::Cancelled));
        assert_eq!(decode_login_username("*"), Err(SaslError::Cancelled));
        assert_eq!(decode_login_password("*"), Err(SaslError::Cancelled));
    }

    #[test]
    fn login_answers() {
        assert_eq!(
            STANDARD.decode(LOGIN_USERNAME_CHALLENGE).unwrap(),
            b"Username:"
        );
        assert_eq!(
            STANDARD.decode(LOGIN_PASSWORD_CHALLENGE).unwrap(),
            b"Password:"
        );
        assert_eq!(decode_login_username("YWxpY2U=").unwrap(), "alice");
        assert_eq!(
            decode_login_password("c2VjcmV0").unwrap().as_bytes(),
            b"secret"
        );
        assert_eq!(decode_login_password("").unwrap().as_bytes(), b"");
        assert_eq!(
            decode_login_username(""),
            Err(SaslError::Malformed("empty user name"))
        );
        assert_eq!(
            decode_login_username("YWxp Y2U="),
            Err(SaslError::Malformed("not valid base64"))
        );
        assert_eq!(
            decode_login_password(&b64(b"a\0b")),
            Err(SaslError::Malformed("NUL in password"))
        );
        assert_eq!(
            decode_login_password(&b64(&[b'p'; 1100])),
            Err(SaslError::Malformed("response too long"))
        );
    }

    #[test]
    fn passwords_are_not_shown() {
        let c = decode_plain("AGFsaWNlAHNlY3JldA==").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
    }
}
