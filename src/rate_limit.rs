//! Per-client rate limits for server mode, where no API Gateway stands in front (under Lambda the
//! template's API Gateway throttling does this, and the limiter is off): a token bucket per
//! client address and route class, answering `429 rate_limited` problem+json with
//! `Retry-After` when a client's bucket is empty.
//!
//! Two classes: the sensitive routes (`/oauth/*` and [`SENSITIVE_POSTS`]: each call costs a
//! provider round trip, a sealed token or a signature, or tries the operator's key) with their
//! own, tighter budget, and every
//! other route but the health checks (a load balancer polls those). Off unless
//! `RATE_LIMIT_PER_MINUTE` is set: behind an ALB or API Gateway that limits already, a second
//! limit per client would count the proxy's address.
//!
//! The client is the socket peer, or the `X-Forwarded-For` entry the configured number of
//! trusted proxies vouch for (`TRUSTED_PROXY_HOPS`, the request layer's own setting), never an
//! address the caller chose. The buckets live in one map bounded at [`MAX_CLIENTS`]: when it is
//! full, buckets that have refilled (idle clients) are dropped; if none has, new clients share
//! one overflow bucket, so a flood of fresh addresses costs memory once and is itself limited.
//!
//! Why not `governor`: its keyed limiter brings `dashmap`, a third `hashbrown` and `quanta` into
//! the Lambda binary (cargo-deny's duplicate check refused it) for what a mutex-guarded map of
//! two numbers per client does here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::env::{Env, EnvError};
use crate::error::ApiError;
use crate::telemetry::http::{HEALTH_PATHS, forwarded_for};

/// Buckets kept at most; past it, idle ones go, then new clients share one.
pub const MAX_CLIENTS: usize = 100_000;

/// A budget: `per_minute` requests a minute on average, in bursts of up to a sixth of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_minute: u32,
}

impl Rate {
    fn capacity(self) -> f64 {
        f64::from((self.per_minute / 6).max(1))
    }

    fn per_second(self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }
}

/// The limits, from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateLimitSettings {
    /// `RATE_LIMIT_PER_MINUTE`: every route but the health checks; `None` turns limiting off.
    pub general: Option<Rate>,
    /// `RATE_LIMIT_SENSITIVE_PER_MINUTE` (default: a tenth of the general one, at least 6):
    /// `/oauth/*` and [`SENSITIVE_POSTS`].
    pub sensitive: Option<Rate>,
}

impl RateLimitSettings {
    pub fn from_env(env: Env<'_>) -> Result<Self, EnvError> {
        let rate = |name: &'static str| -> Result<Option<Rate>, EnvError> {
            env.get(name)
                .map(|v| {
                    v.parse::<u32>()
                        .ok()
                        .filter(|n| (1..=1_000_000).contains(n))
                        .map(|per_minute| Rate { per_minute })
                        .ok_or_else(|| {
                            EnvError::new(name, v, "expected requests a minute, 1 to 1000000")
                        })
                })
                .transpose()
        };
        let general = rate("RATE_LIMIT_PER_MINUTE")?;
        let sensitive = match rate("RATE_LIMIT_SENSITIVE_PER_MINUTE")? {
            Some(rate) => Some(rate),
            None => general.map(|g| Rate {
                per_minute: (g.per_minute / 10).max(6),
            }),
        };
        Ok(Self {
            general,
            sensitive: general.and(sensitive),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Class {
    General,
    Sensitive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    Address(IpAddr),
    /// New clients while the map is full of active ones.
    Overflow,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets.
#[derive(Debug)]
pub struct Limiter {
    settings: RateLimitSettings,
    /// Which `X-Forwarded-For` entry names the client (0: the peer): the request layer's
    /// `TRUSTED_PROXY_HOPS`, so spans and limits see the same client.
    trusted_proxy_hops: usize,
    max_clients: usize,
    buckets: Mutex<HashMap<(Client, Class), Bucket>>,
}

impl Limiter {
    /// `None` when limiting is off.
    pub fn new(settings: RateLimitSettings, trusted_proxy_hops: usize) -> Option<Arc<Self>> {
        Self::with_capacity(settings, trusted_proxy_hops, MAX_CLIENTS)
    }

    /// [`Self::new`] with another bound on the map (tests).
    pub fn with_capacity(
        settings: RateLimitSettings,
        trusted_proxy_hops: usize,
        max_clients: usize,
    ) -> Option<Arc<Self>> {
        settings.general?;
        Some(Arc::new(Self {
            settings,
            trusted_proxy_hops,
            max_clients: max_clients.max(1),
            buckets: Mutex::new(HashMap::new()),
        }))
    }

    fn rate(&self, class: Class) -> Option<Rate> {
        match class {
            Class::General => self.settings.general,
            Class::Sensitive => self.settings.sensitive,
        }
    }

    /// Takes a token for `address` in `class` at `now`; `Err(wait)` when there is none.
    fn take(&self, address: IpAddr, class: Class, now: Instant) -> Result<(), Duration> {
        let Some(rate) = self.rate(class) else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = (Client::Address(address), class);
        if !buckets.contains_key(&key) && buckets.len() >= self.max_clients {
            // Idle clients' buckets are full again: forgetting them changes nothing.
            buckets.retain(|(_, class), bucket| {
                self.rate(*class)
                    .is_some_and(|rate| refilled(*bucket, rate, now) < rate.capacity())
            });
            if buckets.len() >= self.max_clients {
                key = (Client::Overflow, class);
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: rate.capacity(),
            at: now,
        });
        let tokens = refilled(*bucket, rate, now);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) / rate.per_second()))
        }
    }
}

fn refilled(bucket: Bucket, rate: Rate, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * rate.per_second()).min(rate.capacity())
}

/// The sensitive routes beside `/oauth/*`, all `POST`.
pub const SENSITIVE_POSTS: [&str; 3] = [
    "/device/enroll",
    "/device/attest/challenge",
    "/device/attest/clear-cache",
];

fn class_of(method: &axum::http::Method, path: &str) -> Option<Class> {
    if HEALTH_PATHS.contains(&path) {
        return None;
    }
    if path.starts_with("/oauth/")
        || (method == axum::http::Method::POST && SENSITIVE_POSTS.contains(&path))
    {
        Some(Class::Sensitive)
    } else {
        Some(Class::General)
    }
}

/// Axum middleware: the request goes on, or gets its 429. Requests without a socket peer
/// (Lambda) are not limited here.
pub async fn limit_requests(
    State(limiter): State<Arc<Limiter>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(class) = class_of(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let Some(peer) = peer else {
        return next.run(request).await;
    };
    let client = forwarded_for(request.headers(), limiter.trusted_proxy_hops)
        .and_then(|a| a.parse::<IpAddr>().ok())
        .unwrap_or(peer);
    match limiter.take(client, class, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut response = ApiError::coded(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests from this client; retry in {seconds} s"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_minute: u32, sensitive: u32, max: usize) -> Arc<Limiter> {
        Limiter::with_capacity(
            RateLimitSettings {
                general: Some(Rate { per_minute }),
                sensitive: Some(Rate {
                    per_minute: sensitive,
                }),
            },
            0,
            max,
        )
        .expect("on")
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_burst_then_one_request_per_refill() {
        let limiter = limiter(60, 6, 100);
        let start = Instant::now();
        // 60 a minute: a burst of 10, then one a second.
        for _ in 0..10 {
            assert!(limiter.take(ip(1), Class::General, start).is_ok());
        }
        let wait = limiter
            .take(ip(1), Class::General, start)
            .expect_err("the burst is spent");
        assert!((wait.as_secs_f64() - 1.0).abs() < 0.01, "{wait:?}");
        assert!(
            limiter
                .take(ip(1), Class::General, start + Duration::from_millis(1010))
                .is_ok()
        );
        assert!(
            limiter.take(ip(2), Class::General, start).is_ok(),
            "another client has its own bucket"
        );
        assert!(
            limiter.take(ip(1), Class::Sensitive, start).is_ok(),
            "and another class its own"
        );
    }

    #[test]
    fn a_flood_of_new_addresses_is_bounded_and_limited() {
        let limiter = limiter(60, 6, 50);
        let now = Instant::now();
        let mut refused = 0;
        for i in 0..10_000u32 {
            let address = IpAddr::from(std::net::Ipv6Addr::from(u128::from(i) << 64));
            // Each spends its whole burst, so no bucket is idle.
            for _ in 0..11 {
                refused += usize::from(limiter.take(address, Class::General, now).is_err());
            }
        }
        let buckets = limiter.buckets.lock().unwrap();
        assert!(buckets.len() <= 51, "{} buckets", buckets.len());
        assert!(
            refused > 10_000 * 10,
            "the overflow bucket limits them: {refused}"
        );
    }

    #[test]
    fn idle_clients_make_room() {
        let limiter = limiter(60, 6, 2);
        let now = Instant::now();
        assert!(limiter.take(ip(1), Class::General, now).is_ok());
        assert!(limiter.take(ip(2), Class::General, now).is_ok());
        let later = now + Duration::from_secs(60);
        assert!(limiter.take(ip(3), Class::General, later).is_ok());
        let buckets = limiter.buckets.lock().unwrap();
        assert!(buckets.contains_key(&(Client::Address(ip(3)), Class::General)));
        assert!(!buckets.contains_key(&(Client::Overflow, Class::General)));
    }

    #[test]
    fn classes_follow_the_routes() {
        use axum::http::Method;
        assert_eq!(class_of(&Method::GET, "/health"), None);
        assert_eq!(
            class_of(&Method::POST, "/oauth/token/dropbox"),
            Some(Class::Sensitive)
        );
        assert_eq!(
            class_of(&Method::POST, "/device/enroll"),
            Some(Class::Sensitive)
        );
        assert_eq!(
            class_of(&Method::POST, "/device/attest/challenge"),
            Some(Class::Sensitive)
        );
        assert_eq!(
            class_of(&Method::POST, "/device/attest/clear-cache"),
            Some(Class::Sensitive)
        );
        assert_eq!(
            class_of(&Method::POST, "/device/attest/ios"),
            Some(Class::General)
        );
        assert_eq!(
            class_of(&Method::GET, "/device/status/x"),
            Some(Class::General)
        );
    }

    #[test]
    fn settings_are_off_by_default_and_checked() {
        let read = |pairs: &'static [(&'static str, &'static str)]| {
            let lookup = move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            };
            RateLimitSettings::from_env(Env::new(&lookup))
        };
        assert_eq!(read(&[]).unwrap().general, None);
        assert_eq!(read(&[]).unwrap().sensitive, None);
        let on = read(&[("RATE_LIMIT_PER_MINUTE", "600")]).unwrap();
        assert_eq!(on.sensitive, Some(Rate { per_minute: 60 }));
        assert!(read(&[("RATE_LIMIT_PER_MINUTE", "0")]).is_err());
        assert!(read(&[("RATE_LIMIT_PER_MINUTE", "lots")]).is_err());
        assert_eq!(
            read(&[("RATE_LIMIT_SENSITIVE_PER_MINUTE", "5")])
                .unwrap()
                .sensitive,
            None,
            "the sensitive budget alone turns nothing on"
        );
    }
}
