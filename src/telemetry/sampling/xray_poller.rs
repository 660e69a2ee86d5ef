//! X-Ray centralized sampling, the polling side: a background task that fetches the rules
//! (`POST /GetSamplingRules`, at start and every `polling_interval`, 300 s by default, plus up
//! to 5 s of jitter so a fleet does not poll in step) and reports statistics while fetching
//! reservoir quotas (`POST /SamplingTargets`, every 10 s or the `Interval` X-Ray asks for, plus
//! up to 100 ms of jitter), both through the collector's `awsproxy` extension, which signs and
//! forwards them to X-Ray. A `LastRuleModification` newer than our rules fetches them at once,
//! at most once per polling interval (an answer that always claims a newer change cannot make
//! us refetch at every report); until a first rules fetch succeeds it is retried at every
//! targets tick instead of reporting. Redirects are not followed: the proxy never sends one,
//! and following it would turn a POST into a GET to wherever it points.
//!
//! The task's HTTP calls are plain `reqwest` calls: no span is made for them (a sampler that
//! traced its own polling would sample itself). A proxy that does not answer is logged once
//! per episode, and the rule cache keeps what it has ([`super::xray_rules`] falls back once
//! rules are an hour old). Answers larger than 1 MiB are refused.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::XrayOptions;
use super::xray_rules::{
    MAX_STATISTICS_PER_CALL, RuleCache, RulesResponse, StatisticsDocument, TargetsResponse,
};

const LOG_TARGET: &str = "apuntador::telemetry";
const MAX_BODY: usize = 1024 * 1024;
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum PollError {
    #[error("the sampling proxy did not answer: {0}")]
    Unreachable(String),
    #[error("the sampling proxy answered {0}")]
    Status(u16),
    #[error("the sampling proxy's answer is not what X-Ray sends: {0}")]
    Body(String),
}

/// What a rules fetch loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub rules: usize,
    /// Rules left out for breaking X-Ray's limits.
    pub over_limits: usize,
}

fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A random duration up to `max` (from the id generator's randomness).
fn jitter(max: Duration) -> Duration {
    let random = u64::from_be_bytes(
        super::super::xray::new_trace_id().to_bytes()[8..16]
            .try_into()
            .unwrap_or_default(),
    );
    let max_ms = max.as_millis().max(1) as u64;
    Duration::from_millis(random % max_ms)
}

/// Talks to the sampling API.
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
}

impl Client {
    pub fn new(endpoint: &str) -> Result<Self, PollError> {
        let tls = crate::tls::client_config().map_err(|e| PollError::Unreachable(e.to_string()))?;
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| PollError::Unreachable(e.to_string()))?;
        Ok(Self {
            http,
            endpoint: endpoint.to_owned(),
        })
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, PollError> {
        let mut response = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .json(body)
            .send()
            .await
            .map_err(|e| PollError::Unreachable(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(PollError::Status(response.status().as_u16()));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| PollError::Unreachable(e.without_url().to_string()))?
        {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(PollError::Body("larger than 1 MiB".to_owned()));
            }
            bytes.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&bytes).map_err(|e| PollError::Body(e.to_string()))
    }

    /// Fetches the rules into the cache; an answer with more rules than X-Ray allows changes
    /// nothing.
    pub async fn refresh_rules(&self, cache: &RuleCache) -> Result<Loaded, PollError> {
        let response: RulesResponse = self
            .post("/GetSamplingRules", &serde_json::json!({}))
            .await?;
        let loaded = response
            .rules()
            .map_err(|e| PollError::Body(e.to_string()))?;
        let counts = Loaded {
            rules: loaded.rules.len(),
            over_limits: loaded.over_limits,
        };
        cache.update_rules(loaded.rules, Instant::now(), wall_now());
        Ok(counts)
    }

    /// Reports the statistics (25 documents per call at most) and applies the quotas. Returns
    /// the interval X-Ray asks for and whether the rules must be fetched again.
    pub async fn report(&self, cache: &RuleCache) -> Result<(Option<Duration>, bool), PollError> {
        let statistics: Vec<StatisticsDocument> = cache.statistics(wall_now());
        let mut interval: Option<Duration> = None;
        let mut stale = false;
        for chunk in statistics.chunks(MAX_STATISTICS_PER_CALL) {
            let response: TargetsResponse = self
                .post(
                    "/SamplingTargets",
                    &serde_json::json!({ "SamplingStatisticsDocuments": chunk }),
                )
                .await?;
            let (asked, changed) = cache.update_targets(&response, Instant::now(), wall_now());
            interval = match (interval, asked) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            stale |= changed;
        }
        Ok((interval, stale))
    }
}

/// Logs the first failure of an episode and the recovery.
#[derive(Default)]
struct Episode {
    failing: bool,
}

impl Episode {
    fn failed(&mut self, what: &str, error: &PollError) {
        if !self.failing {
            tracing::warn!(
                target: LOG_TARGET,
                error = %error,
                "X-Ray sampling: {what} failed; keeping the rules we have (the fallback samples 1/s + 5% when there are none)"
            );
        }
        self.failing = true;
    }

    fn succeeded(&mut self) {
        if self.failing {
            tracing::info!(target: LOG_TARGET, "X-Ray sampling: the proxy answers again");
        }
        self.failing = false;
    }
}

/// Starts the polling task on the current Tokio runtime.
pub fn spawn(
    cache: Arc<RuleCache>,
    options: XrayOptions,
) -> Result<tokio::task::JoinHandle<()>, PollError> {
    let client = Client::new(&options.endpoint)?;
    Ok(tokio::spawn(run(client, cache, options)))
}

async fn run(client: Client, cache: Arc<RuleCache>, options: XrayOptions) {
    let rules_jitter = jitter(Duration::from_secs(5));
    let targets_jitter = jitter(Duration::from_millis(100));
    let mut episode = Episode::default();
    let mut known_rules: Option<Loaded> = None;
    // When a `LastRuleModification` last made us fetch the rules early.
    let mut early_fetch: Option<tokio::time::Instant> = None;
    let mut next_rules = tokio::time::Instant::now();
    let mut next_targets = next_rules + options.targets_interval + targets_jitter;
    loop {
        tokio::time::sleep_until(next_rules.min(next_targets)).await;
        let now = tokio::time::Instant::now();
        let mut fetch_rules = now >= next_rules;
        if now >= next_targets {
            let mut interval = options.targets_interval;
            if known_rules.is_none() {
                // No rules yet (the proxy was not up): ask again now rather than in 5 minutes.
                fetch_rules = true;
            } else {
                match client.report(&cache).await {
                    Ok((asked, stale)) => {
                        episode.succeeded();
                        interval = asked.unwrap_or(interval);
                        let allowed = early_fetch
                            .is_none_or(|at| now.duration_since(at) >= options.rules_interval);
                        if stale && allowed && !fetch_rules {
                            early_fetch = Some(now);
                            fetch_rules = true;
                        }
                    }
                    Err(error) => episode.failed("reporting statistics", &error),
                }
            }
            next_targets = tokio::time::Instant::now() + interval + targets_jitter;
        }
        if fetch_rules {
            match client.refresh_rules(&cache).await {
                Ok(loaded) => {
                    episode.succeeded();
                    if known_rules != Some(loaded) {
                        tracing::info!(
                            target: LOG_TARGET,
                            rules = loaded.rules,
                            client_id = cache.client_id(),
                            "X-Ray sampling rules loaded"
                        );
                        if loaded.over_limits > 0 {
                            tracing::warn!(
                                target: LOG_TARGET,
                                left_out = loaded.over_limits,
                                "X-Ray sampling rules over X-Ray's limits were left out"
                            );
                        }
                        known_rules = Some(loaded);
                    }
                }
                Err(error) => episode.failed("fetching rules", &error),
            }
            next_rules = tokio::time::Instant::now() + options.rules_interval + rules_jitter;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::sampling::xray_rules::ServiceFacts;

    /// Review item 5: a 302 from the proxy turned the rules POST into a GET to any URL.
    #[tokio::test]
    async fn the_sampling_client_follows_no_redirect() {
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let location = format!("http://{}/elsewhere", target.local_addr().unwrap());
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", proxy.local_addr().unwrap());
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut stream, _)) = proxy.accept().await {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        let client = Client::new(&endpoint).unwrap();
        let cache = RuleCache::new(ServiceFacts::default());
        let error = client.refresh_rules(&cache).await.unwrap_err();
        assert!(matches!(error, PollError::Status(302)), "{error}");
        let called = tokio::time::timeout(Duration::from_millis(200), target.accept()).await;
        assert!(called.is_err(), "the redirect target was never called");
    }
}
