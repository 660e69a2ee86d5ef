//! Whether IAM policy documents allow an action whose resource is `*` (X-Ray's actions have no
//! resource type), evaluated by the doctor itself: moto has no `SimulatePrincipalPolicy`, and
//! the simulator needs a permission of its own. Identity policies and a permissions boundary
//! are evaluated as IAM does (an explicit deny wins; an allow is needed; wildcards `*` and `?`
//! in actions, case-insensitively); conditions are not evaluated but reported; service control
//! policies, session policies and resource policies are not seen at all, and the check says so.

use serde_json::Value;

/// A policy document with the name it is reported by.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedPolicy {
    pub name: String,
    pub document: Value,
}

/// The outcome for one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A statement of the named policy allows it unconditionally (and nothing denies it).
    Allowed {
        by: String,
    },
    /// Only statements with conditions allow it.
    AllowedIf {
        by: String,
    },
    /// A statement denies it unconditionally.
    Denied {
        by: String,
    },
    /// An allow exists, but a conditional deny may apply.
    MaybeDenied {
        by: String,
    },
    NotAllowed,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy document is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
}

/// IAM hands documents out URL-encoded (RFC 3986); moto sometimes does not.
pub fn decode_document(raw: &str) -> Result<Value, PolicyError> {
    let trimmed = raw.trim();
    if trimmed.starts_with('{') {
        return Ok(serde_json::from_str(trimmed)?);
    }
    let decoded = percent_encoding::percent_decode_str(trimmed).decode_utf8_lossy();
    Ok(serde_json::from_str(&decoded)?)
}

/// The decision of `policies` for `action` on resource `*`.
pub fn evaluate(policies: &[NamedPolicy], action: &str) -> Decision {
    let mut allow: Option<(String, bool)> = None;
    let mut conditional_deny: Option<String> = None;
    for policy in policies {
        for statement in statements(&policy.document) {
            if !applies(statement, action) {
                continue;
            }
            let conditional = statement
                .get("Condition")
                .is_some_and(|c| c.as_object().is_none_or(|o| !o.is_empty()));
            match statement.get("Effect").and_then(Value::as_str) {
                Some("Deny") if conditional => {
                    conditional_deny.get_or_insert_with(|| policy.name.clone());
                }
                Some("Deny") => {
                    return Decision::Denied {
                        by: policy.name.clone(),
                    };
                }
                Some("Allow") => {
                    // An unconditional allow is kept over a conditional one.
                    let better = match &allow {
                        None => true,
                        Some((_, was_conditional)) => *was_conditional && !conditional,
                    };
                    if better {
                        allow = Some((policy.name.clone(), conditional));
                    }
                }
                _ => {}
            }
        }
    }
    match (allow, conditional_deny) {
        (None, _) => Decision::NotAllowed,
        (Some(_), Some(by)) => Decision::MaybeDenied { by },
        (Some((by, false)), None) => Decision::Allowed { by },
        (Some((by, true)), None) => Decision::AllowedIf { by },
    }
}

fn statements(document: &Value) -> Vec<&Value> {
    match document.get("Statement") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => Vec::new(),
    }
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    match value {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Whether a statement's action and resource elements cover `action` on `*`.
fn applies(statement: &Value, action: &str) -> bool {
    let action_matches = if let Some(not) = statement.get("NotAction") {
        !strings(Some(not)).iter().any(|p| glob(p, action, true))
    } else {
        strings(statement.get("Action"))
            .iter()
            .any(|p| glob(p, action, true))
    };
    let resource_matches = if let Some(not) = statement.get("NotResource") {
        !strings(Some(not)).iter().any(|p| glob(p, "*", false))
    } else {
        strings(statement.get("Resource"))
            .iter()
            .any(|p| glob(p, "*", false))
    };
    action_matches && resource_matches
}

/// IAM's wildcards: `*` any run of characters, `?` one character.
fn glob(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let fold = |s: &str| {
        if ignore_case {
            s.to_ascii_lowercase()
        } else {
            s.to_owned()
        }
    };
    let (pattern, text): (Vec<char>, Vec<char>) = (
        fold(pattern).chars().collect(),
        fold(text).chars().collect(),
    );
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(name: &str, document: Value) -> NamedPolicy {
        NamedPolicy {
            name: name.into(),
            document,
        }
    }

    const ACTION: &str = "xray:PutTraceSegments";

    #[test]
    fn the_managed_x_ray_policy_allows_it() {
        let managed = policy(
            "AWSXRayDaemonWriteAccess",
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "Resource": ["*"]}]}),
        );
        assert_eq!(
            evaluate(&[managed], ACTION),
            Decision::Allowed {
                by: "AWSXRayDaemonWriteAccess".into()
            }
        );
    }

    #[test]
    fn wildcards_match_as_iam_matches_them() {
        for (action, expected) in [
            ("xray:*", true),
            ("XRay:put*", true),
            ("*", true),
            ("xray:PutTrace?egments", true),
            ("xray:Get*", false),
            ("dynamodb:*", false),
        ] {
            let p = policy(
                "p",
                json!({"Statement": {"Effect": "Allow", "Action": action, "Resource": "*"}}),
            );
            assert_eq!(
                matches!(evaluate(&[p], ACTION), Decision::Allowed { .. }),
                expected,
                "{action}"
            );
        }
    }

    #[test]
    fn a_resource_other_than_star_grants_nothing_for_x_ray() {
        let p = policy(
            "p",
            json!({"Statement": [{"Effect": "Allow", "Action": "xray:PutTraceSegments", "Resource": "arn:aws:xray:eu-west-1:123456789012:group/x"}]}),
        );
        assert_eq!(evaluate(&[p], ACTION), Decision::NotAllowed);
    }

    #[test]
    fn an_explicit_deny_wins_and_conditions_are_reported() {
        let allow = policy(
            "allow",
            json!({"Statement": [{"Effect": "Allow", "Action": "xray:*", "Resource": "*"}]}),
        );
        let deny = policy(
            "deny",
            json!({"Statement": [{"Effect": "Deny", "NotAction": "dynamodb:*", "Resource": "*"}]}),
        );
        assert_eq!(
            evaluate(&[allow.clone(), deny], ACTION),
            Decision::Denied { by: "deny".into() }
        );
        let maybe = policy(
            "maybe",
            json!({"Statement": [{"Effect": "Deny", "Action": "xray:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}),
        );
        assert_eq!(
            evaluate(&[allow, maybe], ACTION),
            Decision::MaybeDenied { by: "maybe".into() }
        );
        let conditional = policy(
            "conditional",
            json!({"Statement": [{"Effect": "Allow", "Action": "xray:*", "Resource": "*", "Condition": {"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}}]}),
        );
        assert_eq!(
            evaluate(&[conditional], ACTION),
            Decision::AllowedIf {
                by: "conditional".into()
            }
        );
    }

    #[test]
    fn documents_are_read_encoded_or_not() {
        let encoded = "%7B%22Statement%22%3A%5B%5D%7D";
        assert_eq!(decode_document(encoded).unwrap(), json!({"Statement": []}));
        assert_eq!(
            decode_document(" {\"Statement\": []}").unwrap(),
            json!({"Statement": []})
        );
        assert!(decode_document("%7Bnot json").is_err());
    }
}
