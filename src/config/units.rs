//! Sizes and durations as they are written in the configuration.
//!
//! Sizes are an integer number of bytes, or a string with an optional `K`, `M` or
//! `G` suffix (case-insensitive) meaning powers of 1024: `"10M"` is 10 485 760 bytes.
//! Durations are strings in humantime's syntax: `"30s"`, `"5m"`, `"1h 30m"`.

use std::time::Duration;

/// A size that cannot be read. The text is written to follow `invalid WHAT: `.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("`{0}` is not a size")]
    NotASize(String),
    #[error("unknown size suffix `{0}` (use K, M or G)")]
    UnknownSuffix(String),
    #[error("size `{0}` is too large")]
    TooLarge(String),
}

/// A duration that humantime cannot read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("`{text}` is not a duration: {cause}")]
pub struct DurationError {
    pub text: String,
    pub cause: humantime::DurationError,
}

/// Parses `"10M"`, `"512K"`, `"1G"`, `"2048"` into bytes (1024-based suffixes).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(SizeError::NotASize(text.to_owned()));
    }
    let multiplier: u64 = match suffix.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        other => return Err(SizeError::UnknownSuffix(other.to_owned())),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| SizeError::TooLarge(text.to_owned()))
}

/// Parses a humantime duration such as `"30s"` or `"5m"`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(text.trim()).map_err(|cause| DurationError {
        text: text.to_owned(),
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("10M"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("10m"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(
            parse_size("10T").unwrap_err().to_string(),
            "unknown size suffix `T` (use K, M or G)"
        );
        assert_eq!(
            parse_size("1x2").unwrap_err().to_string(),
            "unknown size suffix `X2` (use K, M or G)"
        );
        assert_eq!(
            parse_size(" M").unwrap_err().to_string(),
            "`M` is not a size"
        );
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("10 MB").is_err());
        assert!(parse_size("10T").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(
            parse_duration("5 parsecs")
                .unwrap_err()
                .to_string()
                .starts_with("`5 parsecs` is not a duration: ")
        );
    }
}
