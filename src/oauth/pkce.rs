//! PKCE (RFC 7636), S256 only: the verifier's rules and its challenge.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// RFC 7636 §4.1: 43 to 128 characters of `[A-Za-z0-9-._~]`.
pub fn verifier_problem(verifier: &str) -> Option<String> {
    let len = verifier.chars().count();
    if !(43..=128).contains(&len) {
        return Some(format!(
            "code_verifier must be 43 to 128 characters long (got {len})"
        ));
    }
    if !verifier
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        return Some(
            "code_verifier may only contain A-Z, a-z, 0-9, '-', '.', '_' and '~'".to_owned(),
        );
    }
    None
}

/// `BASE64URL(SHA256(verifier))` without padding.
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` is the one `expected_challenge` was made from (constant time).
pub fn matches(verifier: &str, expected_challenge: &str) -> bool {
    challenge(verifier)
        .as_bytes()
        .ct_eq(expected_challenge.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7636_appendix_b_example() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            challenge(verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!matches(
            "another-verifier-another-verifier-another-v",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
    }

    #[test]
    fn verifier_rules() {
        assert!(verifier_problem(&"a".repeat(43)).is_none());
        assert!(verifier_problem(&"a".repeat(128)).is_none());
        assert!(
            verifier_problem(&"a".repeat(42))
                .unwrap()
                .contains("43 to 128")
        );
        assert!(verifier_problem(&"a".repeat(129)).is_some());
        assert!(
            verifier_problem(&format!("{}+", "a".repeat(43)))
                .unwrap()
                .contains("may only contain")
        );
    }
}
