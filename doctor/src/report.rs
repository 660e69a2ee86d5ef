//! The verdict: each check's outcome (pass, warn, fail, skip) with its fix, rendered for a person
//! (the default) or as one JSON document (`--json`), and the exit status. Only what the checks
//! put here is ever printed, and no check puts a value of the deployment's environment here
//! except the telemetry variables `telemetry_env` lets through.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// One check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One check: a stable id (for scripts), what was found, and for a warning or a failure the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(id: &'static str, summary: impl Into<String>) -> Self {
        Self::new(id, Status::Pass, summary, None)
    }

    pub fn skip(id: &'static str, summary: impl Into<String>) -> Self {
        Self::new(id, Status::Skip, summary, None)
    }

    pub fn warn(id: &'static str, summary: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(id, Status::Warn, summary, Some(fix.into()))
    }

    pub fn fail(id: &'static str, summary: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(id, Status::Fail, summary, Some(fix.into()))
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    fn new(
        id: &'static str,
        status: Status,
        summary: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Self {
            id,
            status,
            summary: summary.into(),
            detail: None,
            fix,
        }
    }
}

/// What was examined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetInfo {
    Stack {
        stack: String,
        region: String,
    },
    Ecs {
        cluster: String,
        service: String,
        region: String,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub skip: usize,
}

/// Every check of one run, in the order they ran.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    doctor: &'static str,
    target: TargetInfo,
    verdict: &'static str,
    exit_code: u8,
    counts: Counts,
    trace_id: Option<String>,
    telemetry_environment: BTreeMap<String, String>,
    checks: Vec<Check>,
}

impl Report {
    pub fn new(target: TargetInfo) -> Self {
        Self {
            doctor: concat!("apuntador-doctor ", env!("CARGO_PKG_VERSION")),
            target,
            verdict: "ok",
            exit_code: 0,
            counts: Counts::default(),
            trace_id: None,
            telemetry_environment: BTreeMap::new(),
            checks: Vec::new(),
        }
    }

    pub fn push(&mut self, check: Check) {
        match check.status {
            Status::Pass => self.counts.pass += 1,
            Status::Warn => self.counts.warn += 1,
            Status::Fail => self.counts.fail += 1,
            Status::Skip => self.counts.skip += 1,
        }
        if check.status == Status::Fail {
            self.verdict = "fail";
            self.exit_code = 1;
        }
        self.checks.push(check);
    }

    pub fn extend(&mut self, checks: impl IntoIterator<Item = Check>) {
        for check in checks {
            self.push(check);
        }
    }

    pub fn set_trace_id(&mut self, trace_id: &str) {
        self.trace_id = Some(trace_id.to_owned());
    }

    /// The telemetry variables (already filtered and redacted by `telemetry_env`).
    pub fn set_telemetry_environment(&mut self, variables: BTreeMap<String, String>) {
        self.telemetry_environment = variables;
    }

    /// 0 when nothing failed (warnings allowed), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        self.exit_code
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            // Serialising plain strings and numbers cannot fail; say so if it ever does.
            format!("{{\"verdict\":\"fail\",\"error\":\"report not serialisable: {e}\"}}")
        })
    }

    pub fn to_human(&self) -> String {
        let mut out = String::new();
        let _ = match &self.target {
            TargetInfo::Stack { stack, region } => {
                writeln!(out, "doctor: stack {stack} in {region}\n")
            }
            TargetInfo::Ecs {
                cluster,
                service,
                region,
            } => writeln!(
                out,
                "doctor: ECS service {service} of cluster {cluster} in {region}\n"
            ),
        };
        let width = self.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
        let indent = " ".repeat(width + 10);
        for check in &self.checks {
            let _ = writeln!(
                out,
                "  {}  {:width$}  {}",
                check.status.label(),
                check.id,
                check.summary
            );
            if let Some(detail) = &check.detail {
                let _ = writeln!(out, "{indent}{detail}");
            }
            if let Some(fix) = &check.fix {
                let _ = writeln!(out, "{indent}fix: {fix}");
            }
        }
        if !self.telemetry_environment.is_empty() {
            let _ = writeln!(
                out,
                "\nTelemetry variables (no other variable of the deployment is read out):"
            );
            for (name, value) in &self.telemetry_environment {
                let _ = writeln!(out, "  {name}={value}");
            }
        }
        if let Some(trace_id) = &self.trace_id {
            let _ = writeln!(out, "\nTrace of the request: {trace_id}");
        }
        let c = self.counts;
        let tally = format!(
            "{} failed, {} warning{}, {} passed, {} skipped",
            c.fail,
            c.warn,
            if c.warn == 1 { "" } else { "s" },
            c.pass,
            c.skip
        );
        let _ = if c.fail > 0 {
            writeln!(
                out,
                "\nVerdict: FAIL ({tally}). Apply the fixes above, redeploy, and run doctor again."
            )
        } else if c.warn > 0 {
            writeln!(out, "\nVerdict: OK with warnings ({tally}).")
        } else {
            writeln!(out, "\nVerdict: OK ({tally}).")
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let mut report = Report::new(TargetInfo::Stack {
            stack: "apuntador-backend".into(),
            region: "eu-west-1".into(),
        });
        report.push(Check::pass("stack", "CREATE_COMPLETE"));
        report
    }

    #[test]
    fn a_failure_sets_the_verdict_the_exit_code_and_prints_its_fix() {
        let mut report = report();
        report.push(Check::warn(
            "function.layer",
            "older layer",
            "move to 0.156.0",
        ));
        assert_eq!(report.exit_code(), 0);
        assert!(
            report
                .to_human()
                .contains("Verdict: OK with warnings (0 failed, 1 warning")
        );
        report.push(
            Check::fail(
                "role.xray",
                "no xray:PutTraceSegments",
                "add it to the role",
            )
            .with_detail("evaluated 1 inline policy"),
        );
        assert_eq!(report.exit_code(), 1);
        let human = report.to_human();
        assert!(
            human.contains("  FAIL  role.xray       no xray:PutTraceSegments\n"),
            "{human}"
        );
        assert!(human.contains("evaluated 1 inline policy\n"), "{human}");
        assert!(human.contains("fix: add it to the role\n"), "{human}");
        assert!(human.contains("Verdict: FAIL (1 failed, 1 warning, 1 passed, 0 skipped)"));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["verdict"], "fail");
        assert_eq!(json["exit_code"], 1);
        assert_eq!(json["target"]["kind"], "stack");
        assert_eq!(json["checks"][2]["fix"], "add it to the role");
        assert!(json["checks"][0].get("fix").is_none());
    }

    #[test]
    fn a_clean_run_says_ok() {
        let report = report();
        assert!(
            report
                .to_human()
                .ends_with("Verdict: OK (0 failed, 0 warnings, 1 passed, 0 skipped).\n")
        );
    }
}
