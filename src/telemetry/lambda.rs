//! The Lambda side of telemetry: the cold-start flag the invocation span carries. (The flush
//! after each invocation is a step of the invocation loop in [`crate::lambda`].)

use std::sync::atomic::{AtomicBool, Ordering};

static COLD_START: AtomicBool = AtomicBool::new(true);

/// `true` for the first invocation this process serves, `false` afterwards.
pub fn take_cold_start() -> bool {
    COLD_START.swap(false, Ordering::Relaxed)
}
