//! Whether the role spans are sent with (the function's execution role, the ECS task role) may
//! call `xray:PutTraceSegments`, which X-Ray's APIs and its OTLP endpoint authorise spans as:
//! reads the role's attached and inline policies and its permissions boundary, and evaluates
//! them with `policy`. The check says which policies were evaluated and what was not seen.

use aws_sdk_iam::Client;
use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};

use crate::aws::{AwsFailure, doctor_fix};
use crate::policy::{self, Decision, NamedPolicy};
use crate::report::Check;

/// The action every transport's spans are authorised as.
pub const PUT_TRACE_SEGMENTS: &str = "xray:PutTraceSegments";

/// What IAM says about one role.
#[derive(Debug, Clone, Default)]
pub struct RolePolicies {
    pub attached: Vec<NamedPolicy>,
    pub inline: Vec<NamedPolicy>,
    pub boundary: Option<NamedPolicy>,
    /// Policies that could not be read as JSON, by name.
    pub unreadable: Vec<String>,
}

/// A call that failed, with the permission the doctor needed for it.
pub struct ReadFailure {
    pub failure: AwsFailure,
    pub permission: &'static str,
}

/// Describes a failed call with the permission it needed.
fn needing<E, R>(permission: &'static str) -> impl Fn(SdkError<E, R>) -> ReadFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    move |e| ReadFailure {
        failure: AwsFailure::from_sdk(&e),
        permission,
    }
}

/// The role's name from its ARN (`arn:aws:iam::<account>:role/<path>/<name>`).
pub fn role_name(arn: &str) -> Option<&str> {
    let (_, path) = arn.split_once(":role/")?;
    path.rsplit('/').next().filter(|n| !n.is_empty())
}

/// Reads every policy that decides what the role may do (identity policies and boundary).
pub async fn read(client: &Client, role: &str) -> Result<RolePolicies, ReadFailure> {
    let mut out = RolePolicies::default();
    let got = client
        .get_role()
        .role_name(role)
        .send()
        .await
        .map_err(needing("iam:GetRole"))?;
    let boundary = got
        .role()
        .and_then(|r| r.permissions_boundary())
        .and_then(|b| b.permissions_boundary_arn())
        .map(str::to_owned);

    // The SDK's paginators follow IAM's markers.
    let attached: Vec<(String, String)> = client
        .list_attached_role_policies()
        .role_name(role)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(needing("iam:ListAttachedRolePolicies"))?
        .into_iter()
        .filter_map(|p| Some((p.policy_name?, p.policy_arn?)))
        .collect();
    for (name, arn) in attached {
        match managed_document(client, &arn).await? {
            Ok(document) => out.attached.push(NamedPolicy { name, document }),
            Err(_) => out.unreadable.push(name),
        }
    }
    if let Some(arn) = boundary {
        let name = arn.rsplit('/').next().unwrap_or(&arn).to_owned();
        match managed_document(client, &arn).await? {
            Ok(document) => out.boundary = Some(NamedPolicy { name, document }),
            Err(_) => out.unreadable.push(name),
        }
    }

    let inline: Vec<String> = client
        .list_role_policies()
        .role_name(role)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(needing("iam:ListRolePolicies"))?;
    for name in inline {
        let got = client
            .get_role_policy()
            .role_name(role)
            .policy_name(&name)
            .send()
            .await
            .map_err(needing("iam:GetRolePolicy"))?;
        match policy::decode_document(got.policy_document()) {
            Ok(document) => out.inline.push(NamedPolicy { name, document }),
            Err(_) => out.unreadable.push(name),
        }
    }
    Ok(out)
}

/// A managed policy's default version; the inner error is a document that is not JSON.
async fn managed_document(
    client: &Client,
    arn: &str,
) -> Result<Result<serde_json::Value, policy::PolicyError>, ReadFailure> {
    let got = client
        .get_policy()
        .policy_arn(arn)
        .send()
        .await
        .map_err(needing("iam:GetPolicy"))?;
    let version = got
        .policy()
        .and_then(|p| p.default_version_id())
        .unwrap_or("v1")
        .to_owned();
    let got = client
        .get_policy_version()
        .policy_arn(arn)
        .version_id(version)
        .send()
        .await
        .map_err(needing("iam:GetPolicyVersion"))?;
    let raw = got
        .policy_version()
        .and_then(|v| v.document())
        .unwrap_or_default();
    Ok(policy::decode_document(raw))
}

/// The check for `role_arn` (`what`: "the function's role", "the task role"); `grant` says
/// where this deployment grants the action, for the fix. Also the policies read, for callers
/// that ask about another action.
pub async fn check(
    client: &Client,
    id: &'static str,
    what: &str,
    role_arn: &str,
    grant: &str,
) -> (Check, Option<RolePolicies>) {
    let Some(name) = role_name(role_arn) else {
        let check = Check::fail(
            id,
            format!("{what} {role_arn:?} is not a role ARN"),
            "give it an IAM role",
        );
        return (check, None);
    };
    match read(client, name).await {
        Ok(policies) => (judge(id, what, name, &policies, grant), Some(policies)),
        Err(ReadFailure {
            failure,
            permission,
        }) if failure.is("NoSuchEntity") => {
            let check = Check::fail(
                id,
                format!("{what} {name} does not exist"),
                format!("recreate it or point the deployment at an existing role ({grant})"),
            )
            .with_detail(format!("{permission}: {failure}"));
            (check, None)
        }
        Err(ReadFailure {
            failure,
            permission,
        }) => {
            let check = Check::fail(
                id,
                format!("could not read the policies of {what} {name}: {failure}"),
                doctor_fix(&failure, permission),
            );
            (check, None)
        }
    }
}

/// Whether the policies allow `action` unconditionally (identity policies, and the boundary
/// when there is one).
pub fn allows(policies: &RolePolicies, action: &str) -> bool {
    let identity: Vec<NamedPolicy> = policies
        .attached
        .iter()
        .chain(&policies.inline)
        .cloned()
        .collect();
    let allowed = |decision| matches!(decision, Decision::Allowed { .. });
    allowed(policy::evaluate(&identity, action))
        && policies
            .boundary
            .as_ref()
            .is_none_or(|b| allowed(policy::evaluate(std::slice::from_ref(b), action)))
}

/// The decision, from policies already read.
pub fn judge(
    id: &'static str,
    what: &str,
    name: &str,
    policies: &RolePolicies,
    grant: &str,
) -> Check {
    let identity: Vec<NamedPolicy> = policies
        .attached
        .iter()
        .chain(&policies.inline)
        .cloned()
        .collect();
    let mut seen = format!(
        "evaluated {} attached and {} inline polic{} of {name}",
        policies.attached.len(),
        policies.inline.len(),
        if policies.inline.len() == 1 {
            "y"
        } else {
            "ies"
        }
    );
    if let Some(boundary) = &policies.boundary {
        seen.push_str(&format!(" and its permissions boundary {}", boundary.name));
    }
    if !policies.unreadable.is_empty() {
        seen.push_str(&format!(
            "; not JSON, so not evaluated: {}",
            policies.unreadable.join(", ")
        ));
    }
    seen.push_str("; not visible here: service control policies, session policies");
    let action = PUT_TRACE_SEGMENTS;
    let add = format!("add {action} (Resource \"*\") to the role: {grant}");
    let identity_decision = policy::evaluate(&identity, action);
    let boundary_decision = policies
        .boundary
        .as_ref()
        .map(|b| policy::evaluate(std::slice::from_ref(b), action));
    let check = match (identity_decision, boundary_decision) {
        (Decision::Denied { by }, _) => Check::fail(
            id,
            format!("{what} {name} may not call {action}: {by} denies it"),
            format!("remove the deny of {action} from {by}"),
        ),
        (Decision::NotAllowed, _) => Check::fail(
            id,
            format!("{what} {name} may not call {action}: no statement allows it"),
            add,
        ),
        (_, Some(Decision::Denied { by } | Decision::MaybeDenied { by })) => Check::fail(
            id,
            format!("{what} {name} may not call {action}: its permissions boundary {by} denies it"),
            format!("remove the deny of {action} from the boundary {by}"),
        ),
        (_, Some(Decision::NotAllowed)) => {
            let boundary = policies.boundary.as_ref().map_or("", |b| b.name.as_str());
            Check::fail(
                id,
                format!(
                    "{what} {name} may not call {action}: its permissions boundary {boundary} does not allow it"
                ),
                format!("add {action} to the permissions boundary {boundary}"),
            )
        }
        (Decision::MaybeDenied { by }, _) => Check::warn(
            id,
            format!("{what} {name} may call {action} unless the conditional deny in {by} applies"),
            format!(
                "check that the condition in {by} does not match the calls spans are sent with"
            ),
        ),
        (Decision::AllowedIf { by }, _) | (_, Some(Decision::AllowedIf { by })) => Check::warn(
            id,
            format!("{what} {name} may call {action} only under the conditions of {by}"),
            format!(
                "check that the conditions in {by} hold for the calls spans are sent with, or {add}"
            ),
        ),
        (Decision::Allowed { by }, _) => Check::pass(
            id,
            format!("{what} {name} may call {action} (allowed by {by})"),
        ),
    };
    check.with_detail(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;
    use serde_json::json;

    fn named(name: &str, document: serde_json::Value) -> NamedPolicy {
        NamedPolicy {
            name: name.into(),
            document,
        }
    }

    #[test]
    fn role_names_come_from_arns_with_paths() {
        assert_eq!(
            role_name("arn:aws:iam::123456789012:role/service-role/fn-role"),
            Some("fn-role")
        );
        assert_eq!(
            role_name("arn:aws:iam::123456789012:role/fn-role"),
            Some("fn-role")
        );
        assert_eq!(role_name("fn-role"), None);
    }

    #[test]
    fn a_boundary_must_allow_it_too() {
        let allow = named(
            "xray",
            json!({"Statement": [{"Effect": "Allow", "Action": "xray:PutTraceSegments", "Resource": "*"}]}),
        );
        let narrow = named(
            "boundary",
            json!({"Statement": [{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}]}),
        );
        let policies = RolePolicies {
            inline: vec![allow.clone()],
            boundary: Some(narrow),
            ..RolePolicies::default()
        };
        let check = judge("role.xray", "the function's role", "r", &policies, "grant");
        assert_eq!(check.status, Status::Fail);
        assert!(!allows(&policies, PUT_TRACE_SEGMENTS));
        assert!(
            check
                .summary
                .contains("permissions boundary boundary does not allow it"),
            "{}",
            check.summary
        );
        let policies = RolePolicies {
            inline: vec![allow],
            ..RolePolicies::default()
        };
        let check = judge("role.xray", "the function's role", "r", &policies, "grant");
        assert_eq!(check.status, Status::Pass);
        assert!(allows(&policies, PUT_TRACE_SEGMENTS));
        assert!(!allows(&policies, "xray:PutTelemetryRecords"));
        assert_eq!(
            check.detail.as_deref(),
            Some(
                "evaluated 0 attached and 1 inline policy of r; not visible here: service control policies, session policies"
            )
        );
    }
}
