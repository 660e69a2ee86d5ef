//! The X-Ray trace id a response's `X-Trace-ID` header carries (`1-xxxxxxxx-` and 24 hex digits)
//! and its W3C form (the 32 digits without `1-` and the dash), which `aws/spans` stores as
//! `traceId`: what the live check reads from the answer and searches X-Ray and the logs by.

/// A well-formed X-Ray trace id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceId(String);

impl TraceId {
    /// `1-` + 8 hex digits (the epoch second) + `-` + 24 hex digits; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let mut parts = text.split('-');
        let (Some("1"), Some(time), Some(random), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let hex = |part: &str, len: usize| {
            part.len() == len && part.bytes().all(|b| b.is_ascii_hexdigit())
        };
        (hex(time, 8) && hex(random, 24)).then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The W3C (OpenTelemetry) form: `1-6b04aa01-0123…` is `6b04aa010123…`.
    pub fn w3c(&self) -> String {
        self.0.trim_start_matches("1-").replace('-', "")
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_x_ray_form_and_gives_the_w3c_form() {
        let id = TraceId::parse(" 1-6b04aa01-0123456789abcdef01234567 ").unwrap();
        assert_eq!(id.as_str(), "1-6b04aa01-0123456789abcdef01234567");
        assert_eq!(id.w3c(), "6b04aa010123456789abcdef01234567");
    }

    #[test]
    fn refuses_what_is_not_an_x_ray_trace_id() {
        for text in [
            "",
            "6b04aa010123456789abcdef01234567",
            "2-6b04aa01-0123456789abcdef01234567",
            "1-6b04aa0-0123456789abcdef01234567",
            "1-6b04aa01-0123456789abcdef0123456",
            "1-6b04aa01-0123456789abcdef0123456g",
            "1-6b04aa01-0123456789abcdef01234567-00",
            "Root=1-6b04aa01-0123456789abcdef01234567",
        ] {
            assert_eq!(TraceId::parse(text), None, "{text:?}");
        }
    }
}
