//! `mtactl dkim keygen`: a new signing key, the DNS record to publish, and the
//! `dkim` line to add to the configuration.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::mailauth::dkim::{Algorithm, generate, txt_strings};

/// Writes `DIR/DOMAIN.SELECTOR.key` (PEM, mode 0600, never over an existing file) and
/// prints the TXT record and the configuration line. `bits` is for RSA only.
pub fn keygen(
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
    bits: usize,
    dir: &Path,
) -> Result<(), String> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let valid = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    if !valid(&domain) || !domain.contains('.') {
        return Err(format!(
            "mtactl dkim keygen: `{domain}` is not a domain name"
        ));
    }
    if !valid(selector) {
        return Err(format!(
            "mtactl dkim keygen: `{selector}` is not a valid selector (letters, digits, hyphens)"
        ));
    }
    if algorithm == Algorithm::Rsa && !(2048..=4096).contains(&bits) {
        return Err("mtactl dkim keygen: --bits must be between 2048 and 4096".to_owned());
    }
    let (pem, key) = generate(algorithm, bits).map_err(|e| format!("mtactl dkim keygen: {e}"))?;
    let path: PathBuf = dir.join(format!("{domain}.{selector}.key"));
    write_private(&path, pem.as_bytes())
        .map_err(|e| format!("mtactl dkim keygen: cannot write {}: {e}", path.display()))?;
    outln!("; wrote {} ({})", path.display(), key.algorithm());
    outln!("; publish in DNS:");
    outln!(
        "{selector}._domainkey.{domain}. IN TXT {}",
        txt_strings(&key.dns_record())
    );
    outln!("; add to the configuration:");
    outln!(
        "dkim \"{domain}\" selector=\"{selector}\" key=\"{}\"",
        path.display()
    );
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
