//! The one request: `GET` the API's base URL (`/`, the root route), and the `X-Trace-ID` of the
//! answer. `/` is traced (health checks are not, unless `TRACE_HEALTH_CHECKS=true`), needs no
//! key, touches no provider, table or secret, and is cheap; the doctor follows no redirect.

use std::time::Duration;

use crate::report::Check;
use crate::trace_id::TraceId;

/// The answer's status and its `X-Trace-ID` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub trace_header: Option<String>,
}

/// Sends the request; the error says what went wrong without the URL's credentials.
pub async fn send(url: &str, timeout: Duration) -> Result<Answer, String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent(concat!("apuntador-doctor/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("no HTTP client: {e}"))?;
    let response = client.get(url).send().await.map_err(|e| {
        let kind = if e.is_timeout() {
            "no answer within the time allowed"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "the request failed"
        };
        format!("{kind}: {}", e.without_url())
    })?;
    let trace_header = response
        .headers()
        .get("x-trace-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    Ok(Answer {
        status: response.status().as_u16(),
        trace_header,
    })
}

/// The request check, and the trace id to look for when the answer carried one.
pub fn check(url: &str, result: &Result<Answer, String>) -> (Check, Option<TraceId>) {
    let id = "request";
    let shown = crate::telemetry_env::redact_urls(url);
    let answer = match result {
        Ok(answer) => answer,
        Err(why) => {
            return (
                Check::fail(
                    id,
                    format!("GET {shown}: {why}"),
                    "check the URL (the stack's ApiUrl, or --url) and that the API is deployed and reachable from here",
                ),
                None,
            );
        }
    };
    let status = answer.status;
    let Some(header) = &answer.trace_header else {
        return (
            Check::fail(
                id,
                format!("GET {shown} answered {status} without X-Trace-ID"),
                "the URL does not reach this backend (every answer of it carries X-Trace-ID), or something in front strips the header",
            ),
            None,
        );
    };
    let Some(trace_id) = TraceId::parse(header) else {
        let clipped: String = header.chars().take(80).collect();
        return (
            Check::fail(
                id,
                format!(
                    "GET {shown} answered {status} with X-Trace-ID {clipped:?}, not an X-Ray trace id"
                ),
                "the URL does not reach this backend, or something in front rewrites X-Trace-ID",
            ),
            None,
        );
    };
    let check = match status {
        200..=299 => Check::pass(
            id,
            format!("GET {shown} answered {status} with X-Trace-ID {trace_id}"),
        ),
        500..=599 => Check::fail(
            id,
            format!("GET {shown} answered {status} (X-Trace-ID {trace_id})"),
            "the function failed: its log lines with this trace_id say why",
        ),
        _ => Check::warn(
            id,
            format!(
                "GET {shown} answered {status} (X-Trace-ID {trace_id}); the root route answers 200"
            ),
            "check that the URL is the API's base URL",
        ),
    };
    (check, Some(trace_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    fn answer(status: u16, header: Option<&str>) -> Result<Answer, String> {
        Ok(Answer {
            status,
            trace_header: header.map(str::to_owned),
        })
    }

    const ID: &str = "1-6b04aa01-0123456789abcdef01234567";

    #[test]
    fn judges_the_answer() {
        let (passed, id) = check("https://api.example.com/", &answer(200, Some(ID)));
        assert_eq!(
            (passed.status, id.map(|i| i.to_string())),
            (Status::Pass, Some(ID.to_owned()))
        );
        assert_eq!(
            check("https://x/", &answer(502, Some(ID))).0.status,
            Status::Fail
        );
        assert_eq!(
            check("https://x/", &answer(404, Some(ID))).0.status,
            Status::Warn
        );
        let (missing, none) = check("https://x/", &answer(200, None));
        assert_eq!((missing.status, none), (Status::Fail, None));
        assert_eq!(
            check("https://x/", &answer(200, Some("abc"))).0.status,
            Status::Fail
        );
        let (failed, _) = check(
            "https://u:p@x/?k=v",
            &Err("could not connect: refused".into()),
        );
        assert_eq!(
            failed.summary,
            "GET https://…@x/: could not connect: refused"
        );
    }
}
