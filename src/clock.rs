//! Wall-clock time as Unix seconds: the one clock that sealed OAuth states (their issue and
//! expiry times) and single-use records (their retention) are read against, so the two can
//! never disagree about what "now" is.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the system clock is set before it).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
