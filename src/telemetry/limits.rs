//! How long a span attribute may be, so that no backend refuses a span for its length: X-Ray
//! drops a whole segment whose `http.request.url`, `user_agent` or `client_ip` is over 250
//! characters (the daemon transport's translator checks this before sending, the collector's
//! `awsxray` exporter leaves it to X-Ray's API), and a caller chooses the path and the
//! `User-Agent`. Values are clipped where they are recorded, with the cut marked, so a long
//! request is still traced and the trace says it was cut.

use std::borrow::Cow;

/// X-Ray's limit on `http.request.url`, `user_agent`, `client_ip` and `method`.
pub const XRAY_HTTP_FIELD: usize = 250;

/// `url.path` on a span: short enough that a URL a backend composes from it (scheme, host,
/// path) fits [`XRAY_HTTP_FIELD`] when the span has no `url.full`. Sampling rules still see
/// the path up to 2 KiB.
pub const SPAN_PATH: usize = 200;

/// X-Ray's limit on an annotation's string value.
pub const XRAY_ANNOTATION: usize = 1000;

/// What ends a clipped value.
pub const CUT_MARK: &str = "…";

/// `text` if it fits in `max` bytes, else its longest prefix (at a character boundary) that
/// fits with [`CUT_MARK`] after it.
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    if max < CUT_MARK.len() {
        return Cow::Borrowed(truncate(text, max));
    }
    let mut end = max - CUT_MARK.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{CUT_MARK}", &text[..end]))
}

/// At most `max` bytes of `text`, cut at a character boundary, unmarked: for values that are
/// matched on (sampling rules), not shown.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_at_a_character_boundary_and_marked() {
        assert_eq!(clip("abc", 5), "abc");
        let long = "ñ".repeat(200);
        let clipped = clip(&long, XRAY_HTTP_FIELD);
        assert!(clipped.len() <= XRAY_HTTP_FIELD, "{}", clipped.len());
        assert!(clipped.ends_with(CUT_MARK));
        assert!(clipped.starts_with("ññ"));
        assert_eq!(clip(&"x".repeat(251), 250).len(), 250);
        assert_eq!(clip(&"x".repeat(250), 250).len(), 250);
        assert_eq!(clip("abcdef", 2), "ab", "no room for the mark");
        assert_eq!(clip("abcdef", 0), "");
        assert_eq!(truncate("ñññ", 3), "ñ");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
