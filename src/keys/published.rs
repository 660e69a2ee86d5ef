//! The secret values this repository itself publishes (`published-secrets.txt` beside this
//! file): sample keys for `sam local`, compose, the events, the test harness and scripts, and
//! the old backend's documented defaults. Anyone can read them, so a process configured with
//! one outside `ENVIRONMENT=local` is refused at start-up ([`super::KeySource`] and [`crate::config::Config`]).
//!
//! The list is checked against the tree: the test below scans every text file of the
//! repository for values assigned to secret-looking names (`SECRET_KEY`, `CONFIG_API_KEY`,
//! `*_CLIENT_SECRET`, `SecretKey`, …) and for `Bearer` tokens, and fails on any value not
//! listed, so a new sample key cannot slip into a deployment unnoticed.

/// The list, one value per line (`#` starts a comment line).
const LIST: &str = include_str!("published-secrets.txt");

/// Whether `value` is one of the published secrets.
pub fn is_published(value: &str) -> bool {
    let value = value.trim();
    LIST.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .any(|line| line == value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    /// Text files of the repository (dot-files included), minus build output, local
    /// credentials, vendored assets and the lock file.
    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // What git ignores (build output, local credentials) and vendored assets.
            let skipped = [
                ".git",
                ".aws-sam",
                ".tools",
                ".credentials",
                "target",
                "assets",
                "node_modules",
            ];
            if skipped.contains(&name.as_str()) {
                continue;
            }
            if path.is_dir() {
                files(&path, out);
            } else if name != "Cargo.lock" && name != "published-secrets.txt" {
                out.push(path);
            }
        }
    }

    /// Values assigned to a secret-looking name, and bearer tokens, with where they are.
    fn secrets_in_tree() -> BTreeMap<String, String> {
        // The tree the test runs in (cargo sets the variable for the test process): a test
        // binary reused from a build in another checkout (a shared target directory) would
        // otherwise scan that checkout's files, the baked-in path.
        let root_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf());
        let root = root_dir.as_path();
        let mut paths = Vec::new();
        files(root, &mut paths);
        let assigned = regex::Regex::new(
            r#"(?i)\b\w*(?:secret|api_?key)\w*\b["']?\s*(?::\s*&str\s*=|[:=,]|\\?"\s*[:=,]|=\\")\s*\\?["']?([A-Za-z0-9._~+-]{16,})"#,
        )
        .unwrap();
        let bearer = regex::Regex::new(r"Bearer ([A-Za-z0-9._~+-]{16,})").unwrap();
        let mut found = BTreeMap::new();
        for path in paths {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for (n, line) in text.lines().enumerate() {
                for captures in assigned
                    .captures_iter(line)
                    .chain(bearer.captures_iter(line))
                {
                    let Some(matched) = captures.get(1) else {
                        continue;
                    };
                    let value = matched.as_str();
                    // Names and references, not values: Terraform variables, all-capital
                    // identifiers, AWS names, calls.
                    let reference = value.starts_with("var.")
                        || value.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                        || value.starts_with("arn:")
                        || line[matched.end()..].starts_with('(');
                    if !reference {
                        let at =
                            format!("{}:{}", path.strip_prefix(root).unwrap().display(), n + 1);
                        found.entry(value.to_owned()).or_insert(at);
                    }
                }
            }
        }
        found
    }

    /// Issue 23 item 7: the sample keys published in the repository were accepted with
    /// `ENVIRONMENT=production` (only two older defaults were refused).
    #[test]
    fn every_secret_the_tree_publishes_is_listed_and_refused() {
        let found = secrets_in_tree();
        for must in [
            "local-only-state-key-not-for-deployment-0123",
            "example-config-api-key-for-local-events-0123456789",
            "sam-local-google-client-secret",
        ] {
            assert!(
                found.contains_key(must),
                "the scan misses {must}: {found:?}"
            );
        }
        for (value, at) in &found {
            assert!(
                is_published(value),
                "{value} (at {at}) is a published secret: add it to src/keys/published-secrets.txt"
            );
            for (name, mode) in [("SECRET_KEY", "production"), ("CONFIG_API_KEY", "staging")] {
                let other = if name == "SECRET_KEY" {
                    "CONFIG_API_KEY"
                } else {
                    "SECRET_KEY"
                };
                let fresh = crate::config::tests::fresh_key();
                let vars = [
                    (name, value.as_str()),
                    (other, fresh.as_str()),
                    ("ENVIRONMENT", mode),
                ];
                let refused = crate::config::tests::config(&vars).unwrap_err();
                assert_eq!(
                    refused,
                    crate::config::ConfigError::Key(super::super::KeyError::DefaultSecret {
                        name: name.to_owned()
                    }),
                    "{name}={value} with ENVIRONMENT={mode}"
                );
            }
            let fresh = crate::config::tests::fresh_key();
            let client = [
                ("SECRET_KEY", fresh.as_str()),
                ("DROPBOX_CLIENT_ID", "an-app"),
                ("DROPBOX_CLIENT_SECRET", value.as_str()),
            ];
            assert_eq!(
                crate::config::tests::config(&client).unwrap_err(),
                crate::config::ConfigError::Key(super::super::KeyError::DefaultSecret {
                    name: "DROPBOX_CLIENT_SECRET".to_owned()
                }),
                "an OAuth client secret from the environment: {value}"
            );
            let local = [("SECRET_KEY", value.as_str()), ("ENVIRONMENT", "local")];
            assert!(
                crate::config::tests::config(&local).is_ok(),
                "local development keeps them"
            );
        }
    }

    #[test]
    fn the_list_ignores_comments_and_blank_lines() {
        assert!(is_published(
            "example-config-api-key-for-local-events-0123456789"
        ));
        assert!(is_published(" sm-google-secret "));
        assert!(!is_published(
            "# Every secret value this repository publishes: sample keys in samconfig.toml, deploy/, events/,"
        ));
        assert!(!is_published(""));
        assert!(!is_published("a-fresh-random-value-nobody-has-seen-0000"));
    }
}
