//! Searching a CloudWatch Logs group (`FilterLogEvents`) the one way every check does it: a
//! filter pattern over a window that starts at a given time, page after page up to a bound, and
//! a group that does not exist told apart from one with no match. The callers match the events
//! again themselves: an emulator may ignore a pattern, and the real service matches terms, not
//! the exact field a check means.

use aws_sdk_cloudwatchlogs::Client;

use crate::aws::AwsFailure;

/// One event found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub message: String,
    pub stream: String,
    /// Milliseconds since the epoch.
    pub time: i64,
}

/// Events of `group` since `start_ms` matching `pattern`, at most `pages` pages of 100; `None`
/// when the group does not exist.
pub async fn search(
    client: &Client,
    group: &str,
    pattern: &str,
    start_ms: i64,
    pages: usize,
) -> Result<Option<Vec<Event>>, AwsFailure> {
    let mut events = Vec::new();
    let mut token = None;
    for _ in 0..pages {
        let page = client
            .filter_log_events()
            .log_group_name(group)
            .filter_pattern(pattern)
            .start_time(start_ms)
            .limit(100)
            .set_next_token(token)
            .send()
            .await;
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                let failure = AwsFailure::from_sdk(&e);
                if failure.is("ResourceNotFoundException") {
                    return Ok(None);
                }
                return Err(failure);
            }
        };
        events.extend(page.events().iter().map(|e| Event {
            message: e.message().unwrap_or_default().to_owned(),
            stream: e.log_stream_name().unwrap_or_default().to_owned(),
            time: e.timestamp().unwrap_or_default(),
        }));
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    Ok(Some(events))
}
