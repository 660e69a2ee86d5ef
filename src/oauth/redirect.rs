//! Where the broker may send users back to: an allowlist of exact URIs and custom schemes
//! (`ALLOWED_REDIRECT_URIS`), and redirect URLs built with real percent-encoding.

use url::Url;

use crate::env::{EnvError, split_list};

/// Allowed redirect targets: exact URIs, or whole custom schemes written `scheme://`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedirectAllowlist {
    exact: Vec<String>,
    schemes: Vec<String>,
}

impl RedirectAllowlist {
    pub fn parse(raw: &str) -> Result<Self, EnvError> {
        let mut list = Self::default();
        for entry in split_list(raw) {
            if let Some(scheme) = entry.strip_suffix("://") {
                let valid = !scheme.is_empty()
                    && scheme
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
                if !valid || matches!(scheme, "http" | "https") {
                    return Err(EnvError::new(
                        "ALLOWED_REDIRECT_URIS",
                        entry,
                        "a scheme entry must be a custom scheme such as apuntador://; list http(s) URIs exactly",
                    ));
                }
                list.schemes.push(scheme.to_ascii_lowercase());
            } else {
                Url::parse(&entry).map_err(|e| {
                    EnvError::new("ALLOWED_REDIRECT_URIS", entry.clone(), e.to_string())
                })?;
                list.exact.push(entry);
            }
        }
        Ok(list)
    }

    pub fn allows(&self, uri: &str) -> bool {
        if self.exact.iter().any(|e| e == uri) {
            return true;
        }
        match Url::parse(uri) {
            Ok(url) => self.schemes.iter().any(|s| s == url.scheme()),
            Err(_) => false,
        }
    }
}

/// `base` with `params` appended to its query (after any query it already has), each value
/// percent-encoded.
pub fn with_query(base: &str, params: &[(&str, &str)]) -> Option<String> {
    let mut url = Url::parse(base).ok()?;
    {
        let mut query = url.query_pairs_mut();
        for (key, value) in params {
            query.append_pair(key, value);
        }
    }
    Some(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_uris_and_custom_schemes() {
        let list = RedirectAllowlist::parse("https://app.example/cb, apuntador://").unwrap();
        assert!(list.allows("https://app.example/cb"));
        assert!(!list.allows("https://app.example/cb/../evil"));
        assert!(!list.allows("https://app.example/cb?x=1"));
        assert!(!list.allows("https://evil.example/cb"));
        assert!(list.allows("apuntador://oauth-callback"));
        assert!(list.allows("Apuntador://oauth-callback"));
        assert!(!list.allows("javascript:alert(1)"));
        assert!(!list.allows("not a uri"));
    }

    #[test]
    fn http_schemes_must_be_exact() {
        assert!(RedirectAllowlist::parse("https://").is_err());
        assert!(RedirectAllowlist::parse("not a uri").is_err());
    }

    #[test]
    fn query_values_are_encoded_and_appended() {
        let url = with_query(
            "apuntador://cb?app=1",
            &[("code", "4/abc def&x=y"), ("provider", "googledrive")],
        )
        .unwrap();
        assert_eq!(
            url,
            "apuntador://cb?app=1&code=4%2Fabc+def%26x%3Dy&provider=googledrive"
        );
        let url = with_query("https://app.example/cb", &[("error", "access_denied")]).unwrap();
        assert_eq!(url, "https://app.example/cb?error=access_denied");
    }
}
