//! The UDP link both collector-less transports send through ([`super::xray_daemon`]'s segment
//! documents, [`super::otlp_udp`]'s OTLP): a non-blocking socket connected to
//! `AWS_XRAY_DAEMON_ADDRESS`, an address that does not resolve yet looked up again once a
//! minute, and losses counted and logged at most once a minute. A missing endpoint costs the
//! service nothing: a send never waits, and the spans are lost, as UDP intends.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::metrics;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};

use super::xray_daemon::DaemonAddress;

/// How often, at most, each kind of loss is logged (and how often an address that did not
/// resolve is looked up again). A UDP send cannot tell that the endpoint is back (on loopback
/// every other send to a closed port succeeds), so there is no "recovered" line: a loss is
/// reported at once, then at most once an interval with the count lost in between.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Counts losses and says when one is due to be logged.
#[derive(Debug, Default)]
pub struct Throttle {
    warned_at: Option<Instant>,
    /// Lost since the last warning.
    count: u64,
}

impl Throttle {
    /// Adds `n` losses; the total to log if a warning is due (and resets it).
    pub fn note(&mut self, n: usize) -> Option<u64> {
        self.count += n as u64;
        let due = self
            .warned_at
            .is_none_or(|at| at.elapsed() >= WARNING_INTERVAL);
        if n == 0 || !due {
            return None;
        }
        self.warned_at = Some(Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}

/// A non-blocking UDP socket connected to `address`.
fn connect(address: &DaemonAddress) -> Result<UdpSocket, String> {
    let target = address.resolve().map_err(|e| e.to_string())?;
    let local: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    UdpSocket::bind(local)
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .and_then(|s| s.connect(target).map(|()| s))
        .map_err(|e| format!("X-Ray UDP socket: {e}"))
}

#[derive(Debug)]
struct State {
    /// `None` while the address does not resolve.
    socket: Option<UdpSocket>,
    looked_up_at: Instant,
    lookup_error: Option<String>,
    unreachable: Throttle,
    dropped: Throttle,
}

/// What one delivery did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub sent: usize,
    /// Datagrams the socket would not take, or that had no socket.
    pub failed: usize,
}

/// An export's result: an error only when nothing went out and something failed (the SDK
/// then logs it; the spans are lost either way).
pub fn export_result(sent: usize, failed: usize, endpoint: &str) -> OTelSdkResult {
    if sent == 0 && failed > 0 {
        return Err(OTelSdkError::InternalFailure(format!(
            "{endpoint} unreachable"
        )));
    }
    Ok(())
}

/// The link to one endpoint.
#[derive(Debug)]
pub struct UdpLink {
    address: DaemonAddress,
    /// What the warnings call the endpoint ("X-Ray daemon", …).
    endpoint: &'static str,
    state: Mutex<State>,
}

impl UdpLink {
    /// Never fails: an address that does not resolve yet (a sidecar's name while it starts)
    /// is logged at the first delivery and looked up again once a minute.
    pub fn new(address: &DaemonAddress, endpoint: &'static str) -> Self {
        let (socket, lookup_error) = match connect(address) {
            Ok(socket) => (Some(socket), None),
            Err(error) => (None, Some(error)),
        };
        Self {
            address: address.clone(),
            endpoint,
            state: Mutex::new(State {
                socket,
                looked_up_at: Instant::now(),
                lookup_error,
                unreachable: Throttle::default(),
                dropped: Throttle::default(),
            }),
        }
    }

    /// Sends each datagram (with the count of spans it holds), never waiting. `lost` counts
    /// the spans the caller could not put in a datagram (`why` says why); both kinds of loss
    /// are logged at most once a minute and counted in the metrics (`SpansDropped`, and
    /// `SpanExportFailures` for a delivery that lost datagrams).
    pub fn deliver<'a>(
        &self,
        datagrams: impl IntoIterator<Item = (&'a [u8], usize)>,
        lost: usize,
        why: &str,
    ) -> Delivery {
        let mut spans_failed = 0;
        let mut delivery = Delivery::default();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *state;
        if state.socket.is_none() && state.looked_up_at.elapsed() >= WARNING_INTERVAL {
            state.looked_up_at = Instant::now();
            match connect(&self.address) {
                Ok(socket) => state.socket = Some(socket),
                Err(error) => state.lookup_error = Some(error),
            }
        }
        let mut first_error = None;
        for (datagram, spans) in datagrams {
            let Some(socket) = &state.socket else {
                delivery.failed += 1;
                spans_failed += spans;
                continue;
            };
            match socket.send(datagram) {
                Ok(_) => delivery.sent += 1,
                Err(error) => {
                    delivery.failed += 1;
                    spans_failed += spans;
                    if first_error.is_none() {
                        first_error = Some(if error.kind() == ErrorKind::ConnectionRefused {
                            format!("{error} (nothing listens there: is active tracing on?)")
                        } else {
                            error.to_string()
                        });
                    }
                }
            }
        }
        metrics::record_spans_dropped(lost + spans_failed);
        if delivery.failed > 0 {
            metrics::record_span_export_failure();
        }
        if let Some(count) = state.dropped.note(lost) {
            tracing::warn!(
                target: "apuntador::telemetry",
                dropped_spans = count,
                "spans dropped: {why} (warned at most once a minute)"
            );
        }
        let error = if state.socket.is_none() {
            state.lookup_error.clone()
        } else {
            first_error
        };
        if let (Some(error), Some(count)) = (error, state.unreachable.note(delivery.failed)) {
            tracing::warn!(
                target: "apuntador::telemetry",
                error = %error,
                dropped_datagrams = count,
                "{} unreachable; spans are dropped (warned at most once a minute)",
                self.endpoint
            );
        }
        delivery
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_are_logged_at_once_then_at_most_once_an_interval_with_their_count() {
        let mut throttle = Throttle::default();
        assert_eq!(throttle.note(0), None, "nothing lost, nothing to say");
        assert_eq!(throttle.note(2), Some(2));
        assert_eq!(throttle.note(3), None);
        assert_eq!(throttle.note(1), None);
        throttle.warned_at = Some(Instant::now() - WARNING_INTERVAL);
        assert_eq!(
            throttle.note(1),
            Some(5),
            "the count since the last warning"
        );
    }
}
