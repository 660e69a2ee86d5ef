//! X-Ray centralized sampling, the decision side: the rules a user edits in the X-Ray console
//! (`GetSamplingRules`), the reservoir quotas X-Ray hands each client (`SamplingTargets`), and
//! the statistics reported back. [`super::xray_poller`] does the polling; this module is pure
//! state and is tested with an explicit clock.
//!
//! Modelled on the OpenTelemetry X-Ray remote samplers of other languages
//! (opentelemetry-js-contrib `sampler-aws-xray`, the Ruby `opentelemetry-sampler-xray`, the Java
//! `aws-xray` contrib), with their known slips avoided:
//! - Rules are matched in `Priority` order (ties by `RuleName`) on service name and type, resource
//!   ARN (from the resource), host, method, URL path and attributes (from the span), with X-Ray
//!   wildcards ([`super::wildcard_match`], anchored, case-insensitive); rules with a `Version`
//!   other than 1 are skipped; `Default` always matches. In server mode the attributes a rule's
//!   `Attributes` can match are those the request layer decides on: `http.request.method`,
//!   `url.path`, `http.route` and `server.address`.
//! - Per rule: a reservoir of so many traces per second, then `FixedRate` of the rest by trace
//!   id. Before X-Ray assigns a quota the rule *borrows* one trace per second (reported as
//!   `BorrowCount`, so X-Ray knows the client exists); the quota holds until
//!   `ReservoirQuotaTTL` (an epoch time), after which only the fixed rate applies. The rate
//!   limiter starts full, so the first request after a quota is granted is not refused.
//! - Statistics (`RequestCount`, `SampledCount`, `BorrowCount`) are read and reset at each
//!   report; an unchanged rule keeps its quota and counts across a rules refresh.
//! - No rules yet (the proxy has not answered), an empty list, or rules older than an hour
//!   (the proxy stopped answering): the fallback decides, one trace per second and 5% of the
//!   rest. A failed or malformed poll changes nothing.
//! - Rules are held to X-Ray's documented limits ([`RuleLimits`]): a rule over them is left out
//!   and an answer with more rules than X-Ray allows is refused whole (the rules in use stay),
//!   so whatever answers on the proxy's port cannot make matching expensive. A rule's patterns
//!   are compiled once when it loads ([`Wildcard`], linear in the text), its service facts
//!   matched then too, and the new rule set is built before the lock is taken to swap it in.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use opentelemetry::trace::{Link, SpanKind, TraceId};
use opentelemetry::{Context, Key, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SamplingResult, ShouldSample};
use serde::{Deserialize, Serialize};

use super::wildcard::Wildcard;
use super::{RateLimiter, wildcard_match};

/// Rules not refreshed for this long are no longer trusted.
pub const RULES_TTL: Duration = Duration::from_secs(3600);
/// The fallback: this many traces a second, then [`FALLBACK_RATE`] of the rest.
pub const FALLBACK_PER_SECOND: u64 = 1;
pub const FALLBACK_RATE: f64 = 0.05;
/// X-Ray takes at most this many statistics documents per `SamplingTargets` call.
pub const MAX_STATISTICS_PER_CALL: usize = 25;

/// X-Ray's documented limits on sampling rules (the `SamplingRule` API reference and the
/// service quota of 25 rules per region, besides `Default`); lengths in characters.
pub struct RuleLimits;

impl RuleLimits {
    pub const RULES: usize = 26;
    pub const RULE_NAME: usize = 32;
    pub const SERVICE_NAME: usize = 64;
    pub const SERVICE_TYPE: usize = 64;
    pub const HOST: usize = 64;
    pub const HTTP_METHOD: usize = 10;
    pub const URL_PATH: usize = 128;
    pub const RESOURCE_ARN: usize = 500;
    pub const ATTRIBUTE_KEY: usize = 32;
    pub const ATTRIBUTE_VALUE: usize = 32;
    /// Not documented by X-Ray; a bound on the per-request work of one rule.
    pub const ATTRIBUTES: usize = 32;
}

/// An answer that is not what X-Ray sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} sampling rules; X-Ray allows at most 25 and Default")]
pub struct TooManyRules(pub usize);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn last_priority() -> i64 {
    10_001
}

fn star() -> String {
    "*".to_owned()
}

/// One sampling rule as `GetSamplingRules` returns it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SamplingRule {
    #[serde(rename = "RuleName")]
    pub rule_name: String,
    /// A rule without one sorts after `Default` (10000), as the Python sampler reads it.
    #[serde(rename = "Priority", default = "last_priority")]
    pub priority: i64,
    #[serde(rename = "FixedRate", default)]
    pub fixed_rate: f64,
    #[serde(rename = "ReservoirSize", default)]
    pub reservoir_size: i64,
    #[serde(rename = "ServiceName", default = "star")]
    pub service_name: String,
    #[serde(rename = "ServiceType", default = "star")]
    pub service_type: String,
    #[serde(rename = "Host", default = "star")]
    pub host: String,
    #[serde(rename = "HTTPMethod", default = "star")]
    pub http_method: String,
    #[serde(rename = "URLPath", default = "star")]
    pub url_path: String,
    #[serde(rename = "ResourceARN", default = "star")]
    pub resource_arn: String,
    #[serde(rename = "Version", default)]
    pub version: i64,
    #[serde(rename = "Attributes", default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct RuleRecord {
    #[serde(rename = "SamplingRule")]
    rule: Option<serde_json::Value>,
}

/// The body of a `GetSamplingRules` answer.
#[derive(Debug, Deserialize)]
pub struct RulesResponse {
    #[serde(rename = "SamplingRuleRecords")]
    records: Vec<RuleRecord>,
}

/// The usable rules of an answer, and how many were left out for breaking X-Ray's limits.
#[derive(Debug)]
pub struct LoadedRules {
    pub rules: Vec<SamplingRule>,
    pub over_limits: usize,
}

impl RulesResponse {
    /// The usable rules: records without a rule, rules that do not parse and rules of another
    /// version are left out, and so are rules over [`RuleLimits`] (counted). More records
    /// than X-Ray allows refuse the whole answer.
    pub fn rules(self) -> Result<LoadedRules, TooManyRules> {
        if self.records.len() > RuleLimits::RULES {
            return Err(TooManyRules(self.records.len()));
        }
        let mut over_limits = 0;
        let rules = self
            .records
            .into_iter()
            .filter_map(|r| r.rule)
            .filter_map(|v| serde_json::from_value::<SamplingRule>(v).ok())
            .filter(|r| r.version == 1 && !r.rule_name.is_empty())
            .filter(|r| {
                let ok = r.within_limits();
                over_limits += usize::from(!ok);
                ok
            })
            .collect();
        Ok(LoadedRules { rules, over_limits })
    }
}

impl SamplingRule {
    /// Whether every field is within what X-Ray itself accepts.
    pub fn within_limits(&self) -> bool {
        let fits = |text: &str, max: usize| text.chars().count() <= max;
        // X-Ray's priorities are 1-9999; `Default` has 10000, and a rule sent without one is
        // read as last of all.
        let priority = (1..=9999).contains(&self.priority)
            || self.rule_name == "Default" && self.priority == 10_000
            || self.priority == last_priority();
        fits(&self.rule_name, RuleLimits::RULE_NAME)
            && priority
            && (0.0..=1.0).contains(&self.fixed_rate)
            && self.reservoir_size >= 0
            && fits(&self.service_name, RuleLimits::SERVICE_NAME)
            && fits(&self.service_type, RuleLimits::SERVICE_TYPE)
            && fits(&self.host, RuleLimits::HOST)
            && fits(&self.http_method, RuleLimits::HTTP_METHOD)
            && fits(&self.url_path, RuleLimits::URL_PATH)
            && fits(&self.resource_arn, RuleLimits::RESOURCE_ARN)
            && self.attributes.len() <= RuleLimits::ATTRIBUTES
            && self.attributes.iter().all(|(k, v)| {
                !k.is_empty()
                    && !v.is_empty()
                    && fits(k, RuleLimits::ATTRIBUTE_KEY)
                    && fits(v, RuleLimits::ATTRIBUTE_VALUE)
            })
    }
}

/// One quota assignment of a `SamplingTargets` answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TargetDocument {
    #[serde(rename = "RuleName")]
    pub rule_name: Option<String>,
    #[serde(rename = "FixedRate")]
    pub fixed_rate: Option<f64>,
    #[serde(rename = "ReservoirQuota", default, deserialize_with = "whole_number")]
    pub reservoir_quota: Option<u64>,
    /// Epoch seconds at which the quota expires.
    #[serde(rename = "ReservoirQuotaTTL")]
    pub reservoir_quota_ttl: Option<f64>,
    /// Seconds until the next report X-Ray asks for.
    #[serde(rename = "Interval", default, deserialize_with = "whole_number")]
    pub interval: Option<u64>,
}

/// A count X-Ray sends as a JSON number (`2` or `2.0`); negative or absurd values are read as
/// absent rather than failing the whole answer.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = Option::<f64>::deserialize(d)?;
    Ok(value
        .filter(|v| v.is_finite() && *v >= 0.0 && *v <= 1e9)
        .map(|v| v as u64))
}

/// The body of a `SamplingTargets` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TargetsResponse {
    #[serde(rename = "SamplingTargetDocuments", default)]
    pub documents: Vec<TargetDocument>,
    /// Epoch seconds of the last rule change: newer than our copy means fetch the rules now.
    #[serde(rename = "LastRuleModification")]
    pub last_rule_modification: Option<f64>,
}

/// One rule's statistics for a `SamplingTargets` call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatisticsDocument {
    #[serde(rename = "ClientID")]
    pub client_id: String,
    #[serde(rename = "RuleName")]
    pub rule_name: String,
    /// Epoch seconds.
    #[serde(rename = "Timestamp")]
    pub timestamp: u64,
    #[serde(rename = "RequestCount")]
    pub request_count: u64,
    #[serde(rename = "SampledCount")]
    pub sampled_count: u64,
    #[serde(rename = "BorrowCount")]
    pub borrow_count: u64,
}

/// What rules match on about this service, from the tracer provider's resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceFacts {
    pub service_name: Option<String>,
    /// `AWS::ECS::Container`, `AWS::Lambda::Function`, … from `cloud.platform`.
    pub service_type: Option<&'static str>,
    pub resource_arn: Option<String>,
}

impl ServiceFacts {
    pub fn from_resource(resource: &Resource) -> Self {
        let get = |key: &'static str| {
            resource
                .get(&Key::from_static_str(key))
                .map(|v| v.to_string())
        };
        let platform = get("cloud.platform");
        let service_type = match platform.as_deref() {
            Some("aws_ec2") => Some("AWS::EC2::Instance"),
            Some("aws_ecs") => Some("AWS::ECS::Container"),
            Some("aws_eks") => Some("AWS::EKS::Container"),
            Some("aws_elastic_beanstalk") => Some("AWS::ElasticBeanstalk::Environment"),
            Some("aws_lambda") => Some("AWS::Lambda::Function"),
            _ => None,
        };
        let resource_arn = get("aws.ecs.container.arn")
            .or_else(|| get("aws.ecs.cluster.arn"))
            .or_else(|| get("aws.eks.cluster.arn"))
            .or_else(|| {
                (platform.as_deref() == Some("aws_lambda"))
                    .then(|| get("cloud.resource_id"))
                    .flatten()
            });
        Self {
            service_name: get("service.name"),
            service_type,
            resource_arn,
        }
    }
}

fn by_trace_id(rate: f64, trace_id: TraceId) -> bool {
    Sampler::TraceIdRatioBased(rate)
        .should_sample(None, trace_id, "", &SpanKind::Internal, &[], &[])
        .decision
        == SamplingDecision::RecordAndSample
}

#[derive(Debug)]
struct Reservoir {
    limiter: RateLimiter,
    /// `None`: no expiry (borrowing before any quota).
    expires: Option<Instant>,
    borrowing: bool,
    fixed_rate: f64,
}

#[derive(Debug, Default)]
struct Statistics {
    requests: AtomicU64,
    sampled: AtomicU64,
    borrowed: AtomicU64,
}

/// A rule's request patterns, compiled when it loads.
#[derive(Debug)]
struct Patterns {
    host: Wildcard,
    method: Wildcard,
    path: Wildcard,
    attributes: Vec<(String, Wildcard)>,
}

impl Patterns {
    fn compile(rule: &SamplingRule) -> Option<Self> {
        Some(Self {
            host: Wildcard::compile(&rule.host).ok()?,
            method: Wildcard::compile(&rule.http_method).ok()?,
            path: Wildcard::compile(&rule.url_path).ok()?,
            attributes: rule
                .attributes
                .iter()
                .map(|(k, v)| Wildcard::compile(v).ok().map(|w| (k.clone(), w)))
                .collect::<Option<_>>()?,
        })
    }
}

/// A rule with its compiled patterns, reservoir and counts.
#[derive(Debug)]
struct Applier {
    rule: SamplingRule,
    /// `None` for `Default`, which matches everything.
    patterns: Option<Patterns>,
    /// Whether the rule's service name, type and ARN match this service (fixed facts, so
    /// matched once).
    serves_us: bool,
    reservoir: Mutex<Reservoir>,
    statistics: Statistics,
}

impl Applier {
    /// `None` for a rule whose patterns do not compile.
    fn new(rule: SamplingRule, facts: &ServiceFacts, now: Instant) -> Option<Self> {
        let borrow = rule.reservoir_size > 0;
        let default = rule.rule_name == "Default";
        let patterns = if default {
            None
        } else {
            Some(Patterns::compile(&rule)?)
        };
        let serves_us = default
            || wildcard_match(&rule.service_name, facts.service_name.as_deref())
                && wildcard_match(&rule.service_type, facts.service_type)
                && wildcard_match(&rule.resource_arn, facts.resource_arn.as_deref());
        Some(Self {
            reservoir: Mutex::new(Reservoir {
                limiter: RateLimiter::new(u64::from(borrow), now),
                expires: None,
                borrowing: borrow,
                fixed_rate: rule.fixed_rate,
            }),
            rule,
            patterns,
            serves_us,
            statistics: Statistics::default(),
        })
    }

    fn matches(&self, span: &SpanFacts<'_>) -> bool {
        let Some(patterns) = &self.patterns else {
            return true;
        };
        self.serves_us
            && patterns.host.matches(span.host)
            && patterns.method.matches(span.method)
            && patterns.path.matches(span.path)
            && patterns.attributes.iter().all(|(key, pattern)| {
                let value = span
                    .attributes
                    .iter()
                    .find(|kv| kv.key.as_str() == key)
                    .map(|kv| kv.value.as_str());
                value.is_some_and(|v| pattern.matches(Some(&v)))
            })
    }

    fn decide(&self, now: Instant, trace_id: TraceId) -> bool {
        let (by_reservoir, borrowed, rate) = {
            let mut reservoir = lock(&self.reservoir);
            let live = reservoir.expires.is_none_or(|at| now < at);
            let taken = live && reservoir.limiter.try_take(now);
            (taken, taken && reservoir.borrowing, reservoir.fixed_rate)
        };
        let sampled = by_reservoir || by_trace_id(rate, trace_id);
        let stats = &self.statistics;
        stats.requests.fetch_add(1, Ordering::Relaxed);
        if sampled {
            stats.sampled.fetch_add(1, Ordering::Relaxed);
        }
        if borrowed {
            stats.borrowed.fetch_add(1, Ordering::Relaxed);
        }
        sampled
    }

    fn apply(&self, target: &TargetDocument, now: Instant, wall_now: f64) {
        let mut reservoir = lock(&self.reservoir);
        reservoir.borrowing = false;
        if let Some(quota) = target.reservoir_quota
            && quota != reservoir.limiter.per_second()
        {
            reservoir.limiter = RateLimiter::new(quota, now);
        }
        // No TTL: the quota is already spent (as the X-Ray SDKs read it).
        let left = target
            .reservoir_quota_ttl
            .map(|ttl| (ttl - wall_now).clamp(0.0, 86_400.0))
            .unwrap_or(0.0);
        reservoir.expires = Some(now + Duration::from_secs_f64(left));
        if let Some(rate) = target.fixed_rate {
            reservoir.fixed_rate = rate.clamp(0.0, 1.0);
        }
    }
}

/// The span facts rules look at.
struct SpanFacts<'a> {
    host: Option<&'a str>,
    method: Option<&'a str>,
    path: Option<&'a str>,
    attributes: &'a [KeyValue],
}

fn string_attribute<'a>(attributes: &'a [KeyValue], keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|key| {
        attributes.iter().find_map(|kv| match &kv.value {
            opentelemetry::Value::String(s) if kv.key.as_str() == *key => Some(s.as_str()),
            _ => None,
        })
    })
}

struct Rules {
    appliers: Vec<Arc<Applier>>,
    /// When the rules were last fetched, on both clocks.
    updated: Option<(Instant, f64)>,
}

/// The rules, their reservoirs and counts, shared by the sampler and the poller.
pub struct RuleCache {
    facts: ServiceFacts,
    client_id: String,
    rules: RwLock<Rules>,
    fallback: Mutex<RateLimiter>,
}

impl std::fmt::Debug for RuleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("RuleCache")
            .field("facts", &self.facts)
            .field("client_id", &self.client_id)
            .field("rules", &rules.appliers.len())
            .finish()
    }
}

/// 24 hex digits, random per process (the random part of a fresh X-Ray trace id).
fn new_client_id() -> String {
    let id = format!("{:032x}", super::super::xray::new_trace_id());
    id[8..].to_owned()
}

impl RuleCache {
    pub fn new(facts: ServiceFacts) -> Self {
        Self::with_client_id(facts, new_client_id())
    }

    pub fn with_client_id(facts: ServiceFacts, client_id: String) -> Self {
        Self {
            facts,
            client_id,
            rules: RwLock::new(Rules {
                appliers: Vec::new(),
                updated: None,
            }),
            fallback: Mutex::new(RateLimiter::new(FALLBACK_PER_SECOND, Instant::now())),
        }
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Replaces the rules; a rule that did not change keeps its quota and counts. The new set
    /// is built (patterns compiled, facts matched) before the write lock is taken, which is
    /// held only to swap it in: requests deciding meanwhile use the old set.
    pub fn update_rules(&self, mut rules: Vec<SamplingRule>, now: Instant, wall_now: f64) {
        rules.sort_by(|a, b| {
            a.priority
                .cmp(&b.priority)
                .then_with(|| a.rule_name.cmp(&b.rule_name))
        });
        let current: HashMap<String, Arc<Applier>> = self
            .rules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .appliers
            .iter()
            .map(|a| (a.rule.rule_name.clone(), a.clone()))
            .collect();
        let appliers = rules
            .into_iter()
            .filter_map(|rule| match current.get(&rule.rule_name) {
                Some(kept) if kept.rule == rule => Some(kept.clone()),
                _ => Applier::new(rule, &self.facts, now).map(Arc::new),
            })
            .collect();
        let next = Rules {
            appliers,
            updated: Some((now, wall_now)),
        };
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = next;
    }

    /// Applies a targets answer. Returns the interval X-Ray asks for before the next report
    /// (the shortest among known rules) and whether the rules changed since they were fetched.
    pub fn update_targets(
        &self,
        response: &TargetsResponse,
        now: Instant,
        wall_now: f64,
    ) -> (Option<Duration>, bool) {
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        let mut interval: Option<u64> = None;
        for target in &response.documents {
            let Some(name) = target.rule_name.as_deref() else {
                continue;
            };
            if let Some(applier) = rules.appliers.iter().find(|a| a.rule.rule_name == name) {
                applier.apply(target, now, wall_now);
                if let Some(seconds) = target.interval.filter(|s| *s > 0) {
                    interval = Some(interval.map_or(seconds, |i| i.min(seconds)));
                }
            }
        }
        let stale = match (response.last_rule_modification, rules.updated) {
            (Some(modified), Some((_, fetched))) => modified > fetched,
            _ => false,
        };
        (interval.map(Duration::from_secs), stale)
    }

    /// Every rule's counts since the last call (read and reset), as statistics documents.
    pub fn statistics(&self, wall_now: f64) -> Vec<StatisticsDocument> {
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        rules
            .appliers
            .iter()
            .map(|a| StatisticsDocument {
                client_id: self.client_id.clone(),
                rule_name: a.rule.rule_name.clone(),
                timestamp: wall_now.max(0.0) as u64,
                // Read in the reverse of the order `decide` counts them: a request counted
                // while we read cannot show more sampled than requested.
                borrow_count: a.statistics.borrowed.swap(0, Ordering::Relaxed),
                sampled_count: a.statistics.sampled.swap(0, Ordering::Relaxed),
                request_count: a.statistics.requests.swap(0, Ordering::Relaxed),
            })
            .collect()
    }

    /// Whether a root span with these attributes is sampled.
    pub fn decide(&self, now: Instant, trace_id: TraceId, attributes: &[KeyValue]) -> bool {
        let applier = {
            let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
            let fresh = rules
                .updated
                .is_some_and(|(at, _)| now.saturating_duration_since(at) < RULES_TTL);
            if fresh {
                let span = SpanFacts {
                    host: string_attribute(attributes, &["server.address", "http.host"]),
                    method: string_attribute(attributes, &["http.request.method", "http.method"]),
                    path: string_attribute(attributes, &["url.path", "http.target"]),
                    attributes,
                };
                rules.appliers.iter().find(|a| a.matches(&span)).cloned()
            } else {
                None
            }
        };
        match applier {
            Some(applier) => applier.decide(now, trace_id),
            None => lock(&self.fallback).try_take(now) || by_trace_id(FALLBACK_RATE, trace_id),
        }
    }
}

/// The sampler the tracer provider asks (wrapped in `ParentBased`: only root spans get here).
#[derive(Debug, Clone)]
pub struct XraySampler {
    cache: Arc<RuleCache>,
}

impl XraySampler {
    pub fn new(cache: Arc<RuleCache>) -> Self {
        Self { cache }
    }
}

impl ShouldSample for XraySampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let sampled = self.cache.decide(Instant::now(), trace_id, attributes);
        super::decided(sampled, parent_context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WALL: f64 = 1_800_000_000.0;

    fn rule(json: serde_json::Value) -> SamplingRule {
        let mut base = serde_json::json!({
            "RuleName": "r", "RuleARN": "arn:aws:xray:eu-west-1:1:sampling-rule/r",
            "ResourceARN": "*", "Priority": 100, "FixedRate": 0.0, "ReservoirSize": 0,
            "ServiceName": "*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*",
            "URLPath": "*", "Version": 1, "Attributes": {}
        });
        for (k, v) in json.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn facts() -> ServiceFacts {
        ServiceFacts {
            service_name: Some("apuntador-backend".into()),
            service_type: Some("AWS::ECS::Container"),
            resource_arn: Some("arn:aws:ecs:eu-west-1:1:container/c".into()),
        }
    }

    fn span(method: &'static str, path: &'static str) -> Vec<KeyValue> {
        vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.path", path),
            KeyValue::new("server.address", "api.example.com"),
            KeyValue::new("http.route", "/oauth/token/{provider}"),
        ]
    }

    /// Distinct trace ids spread over the ratio space.
    fn id(i: u64) -> TraceId {
        TraceId::from(u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
    }

    fn cache_with(rules: Vec<SamplingRule>, now: Instant) -> RuleCache {
        let cache = RuleCache::with_client_id(facts(), "0123456789abcdef01234567".into());
        cache.update_rules(rules, now, WALL);
        cache
    }

    /// Which rule a span falls under, seen through its statistics.
    fn matched(cache: &RuleCache, attributes: &[KeyValue], now: Instant) -> Option<String> {
        cache.decide(now, id(1), attributes);
        cache
            .statistics(WALL)
            .into_iter()
            .find(|s| s.request_count == 1)
            .map(|s| s.rule_name)
    }

    #[test]
    fn rules_match_on_service_method_path_host_and_attributes_in_priority_order() {
        let now = Instant::now();
        let cache = cache_with(
            vec![
                rule(serde_json::json!({"RuleName": "Default", "Priority": 10000})),
                rule(
                    serde_json::json!({"RuleName": "token", "Priority": 10, "HTTPMethod": "POST", "URLPath": "/oauth/token/*"}),
                ),
                rule(
                    serde_json::json!({"RuleName": "b-same-priority", "Priority": 20, "URLPath": "/device/*"}),
                ),
                rule(
                    serde_json::json!({"RuleName": "a-same-priority", "Priority": 20, "URLPath": "/device/*"}),
                ),
                rule(
                    serde_json::json!({"RuleName": "other-service", "Priority": 1, "ServiceName": "billing"}),
                ),
                rule(
                    serde_json::json!({"RuleName": "lambda-only", "Priority": 2, "ServiceType": "AWS::Lambda::Function"}),
                ),
                rule(
                    serde_json::json!({"RuleName": "other-host", "Priority": 3, "Host": "internal.*"}),
                ),
                rule(
                    serde_json::json!({"RuleName": "other-arn", "Priority": 4, "ResourceARN": "arn:aws:ecs:us-east-1:*"}),
                ),
                rule(
                    serde_json::json!({"RuleName": "attr", "Priority": 5, "Attributes": {"http.route": "/config/*"}}),
                ),
            ],
            now,
        );
        assert_eq!(
            matched(&cache, &span("POST", "/oauth/token/dropbox"), now).as_deref(),
            Some("token")
        );
        assert_eq!(
            matched(&cache, &span("GET", "/oauth/token/dropbox"), now).as_deref(),
            Some("Default"),
            "method must match too"
        );
        assert_eq!(
            matched(&cache, &span("get", "/DEVICE/enroll"), now).as_deref(),
            Some("a-same-priority"),
            "ties by name; case ignored"
        );
        let mut with_route = span("GET", "/config/providers");
        with_route[3] = KeyValue::new("http.route", "/config/providers");
        assert_eq!(matched(&cache, &with_route, now).as_deref(), Some("attr"));
        assert_eq!(
            matched(&cache, &[], now).as_deref(),
            Some("Default"),
            "a span without facts falls to Default"
        );
    }

    #[test]
    fn rules_of_another_version_or_without_a_name_are_skipped() {
        let response: RulesResponse = serde_json::from_value(serde_json::json!({
            "SamplingRuleRecords": [
                {"SamplingRule": {"RuleName": "v2", "Version": 2, "Priority": 1, "FixedRate": 1.0}},
                {"SamplingRule": {"Version": 1, "Priority": 1}},
                {"SamplingRule": {"RuleName": "bad", "Version": 1, "Priority": "high"}},
                {"CreatedAt": 1.0},
                {"SamplingRule": {"RuleName": "Default", "Version": 1, "Priority": 10000,
                  "FixedRate": 0.05, "ReservoirSize": 1, "ServiceName": "*", "ServiceType": "*",
                  "Host": "*", "HTTPMethod": "*", "URLPath": "*", "ResourceARN": "*",
                  "RuleARN": "arn", "Attributes": {}}, "ModifiedAt": 1.7e9}
            ],
            "NextToken": null
        }))
        .unwrap();
        let loaded = response.rules().unwrap();
        assert_eq!(loaded.rules.len(), 1);
        assert_eq!(loaded.rules[0].rule_name, "Default");
        assert_eq!(loaded.rules[0].reservoir_size, 1);
        assert_eq!(loaded.over_limits, 0);
    }

    fn response_of(rules: Vec<serde_json::Value>) -> RulesResponse {
        serde_json::from_value(serde_json::json!({
            "SamplingRuleRecords": rules
                .into_iter()
                .map(|r| serde_json::json!({"SamplingRule": r}))
                .collect::<Vec<_>>()
        }))
        .unwrap()
    }

    fn rule_json(name: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut base = serde_json::json!({
            "RuleName": name, "Priority": 100, "FixedRate": 0.0, "ReservoirSize": 0,
            "ServiceName": "*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*",
            "URLPath": "*", "ResourceARN": "*", "Version": 1, "Attributes": {}
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    /// Review item 5: an answer of 10,400 rules (the 1 MiB cap allowed it) stalled every
    /// request at each refresh, and rules of any length were matched per request.
    #[test]
    fn answers_and_rules_beyond_x_ray_limits_are_refused() {
        let many: Vec<_> = (0..10_400)
            .map(|i| rule_json(&format!("r{i}"), serde_json::json!({})))
            .collect();
        assert_eq!(
            response_of(many).rules().unwrap_err(),
            TooManyRules(10_400),
            "more rules than X-Ray allows: the whole answer"
        );
        let mut legal: Vec<_> = (0..25)
            .map(|i| {
                rule_json(
                    &format!("r{i}"),
                    serde_json::json!({"URLPath": "*".repeat(128)}),
                )
            })
            .collect();
        legal.push(rule_json("Default", serde_json::json!({"Priority": 10000})));
        assert_eq!(response_of(legal).rules().unwrap().rules.len(), 26);

        let over = [
            serde_json::json!({"URLPath": "*a".repeat(65)}),
            serde_json::json!({"Host": "h".repeat(65)}),
            serde_json::json!({"HTTPMethod": "GETGETGETGE"}),
            serde_json::json!({"ServiceName": "s".repeat(65)}),
            serde_json::json!({"ServiceType": "t".repeat(65)}),
            serde_json::json!({"ResourceARN": "a".repeat(501)}),
            serde_json::json!({"Priority": 0}),
            serde_json::json!({"Priority": 10_000}),
            serde_json::json!({"FixedRate": 1.5}),
            serde_json::json!({"ReservoirSize": -1}),
            serde_json::json!({"Attributes": {"k": "v".repeat(33)}}),
            serde_json::json!({"Attributes": {"k".repeat(33): "v"}}),
            serde_json::json!({"Attributes": (0..33).map(|i| (format!("k{i}"), "v".into())).collect::<serde_json::Map<String, serde_json::Value>>()}),
        ];
        let count = over.len();
        let mut rules: Vec<_> = over
            .into_iter()
            .enumerate()
            .map(|(i, extra)| rule_json(&format!("over{i}"), extra))
            .collect();
        rules.push(rule_json(&"n".repeat(33), serde_json::json!({})));
        rules.push(rule_json("fine", serde_json::json!({"URLPath": "/é/*"})));
        let loaded = response_of(rules).rules().unwrap();
        assert_eq!(
            loaded
                .rules
                .iter()
                .map(|r| r.rule_name.as_str())
                .collect::<Vec<_>>(),
            ["fine"]
        );
        assert_eq!(loaded.over_limits, count + 1);
    }

    /// 25 X-Ray-legal rules of 128 characters, none matching, against a 2 KiB path: the
    /// former backtracking matcher took about 20 ms for this; the answer must be the same.
    #[test]
    fn the_heaviest_legal_rules_decide_correctly_on_a_long_path() {
        let t0 = Instant::now();
        let mut rules: Vec<SamplingRule> = (0..25)
            .map(|i| {
                rule(
                    serde_json::json!({"RuleName": format!("r{i:02}"), "Priority": 1,
                    "FixedRate": 1.0, "URLPath": "*a".repeat(63) + "*b"}),
                )
            })
            .collect();
        rules.push(rule(
            serde_json::json!({"RuleName": "Default", "Priority": 10000, "FixedRate": 0.0}),
        ));
        let cache = cache_with(rules, t0);
        let path = "/".to_owned() + &"a".repeat(2047);
        let span = [KeyValue::new("url.path", path.clone())];
        assert_eq!(matched(&cache, &span, t0).as_deref(), Some("Default"));
        let span = [KeyValue::new("url.path", path + "b")];
        assert_eq!(matched(&cache, &span, t0).as_deref(), Some("r00"));
    }

    #[test]
    fn before_a_quota_a_rule_borrows_one_a_second_then_uses_its_fixed_rate() {
        let t0 = Instant::now();
        let cache = cache_with(
            vec![rule(
                serde_json::json!({"RuleName": "Default", "Priority": 10000, "ReservoirSize": 5, "FixedRate": 0.0}),
            )],
            t0,
        );
        let sampled: usize = (0..10).filter(|i| cache.decide(t0, id(*i), &[])).count();
        assert_eq!(
            sampled, 1,
            "one borrowed trace in the first second, the rate is 0"
        );
        let later = t0 + Duration::from_millis(1000);
        assert!(cache.decide(later, id(99), &[]), "a second later, one more");
        let stats = cache.statistics(WALL);
        assert_eq!(
            (
                stats[0].request_count,
                stats[0].sampled_count,
                stats[0].borrow_count
            ),
            (11, 2, 2)
        );
        assert_eq!(stats[0].client_id, "0123456789abcdef01234567");
        let stats = cache.statistics(WALL);
        assert_eq!(
            (
                stats[0].request_count,
                stats[0].sampled_count,
                stats[0].borrow_count
            ),
            (0, 0, 0),
            "read and reset"
        );
    }

    #[test]
    fn a_quota_holds_until_its_ttl_then_only_the_fixed_rate_applies() {
        let t0 = Instant::now();
        let cache = cache_with(
            vec![rule(
                serde_json::json!({"RuleName": "token", "Priority": 1, "ReservoirSize": 1, "FixedRate": 0.0}),
            )],
            t0,
        );
        let (interval, stale) = cache.update_targets(
            &serde_json::from_value(serde_json::json!({
                "SamplingTargetDocuments": [
                    {"RuleName": "token", "FixedRate": 0.0, "ReservoirQuota": 3,
                     "ReservoirQuotaTTL": WALL + 10.0, "Interval": 5},
                    {"RuleName": "unknown", "FixedRate": 1.0, "Interval": 1}
                ],
                "LastRuleModification": WALL - 100.0,
                "UnprocessedStatistics": []
            }))
            .unwrap(),
            t0,
            WALL,
        );
        assert_eq!(
            interval,
            Some(Duration::from_secs(5)),
            "unknown rules ignored"
        );
        assert!(!stale);
        let first: usize = (0..10).filter(|i| cache.decide(t0, id(*i), &[])).count();
        assert_eq!(first, 3, "the quota, no borrowing");
        let stats = cache.statistics(WALL);
        assert_eq!((stats[0].sampled_count, stats[0].borrow_count), (3, 0));
        let after_ttl = t0 + Duration::from_secs(11);
        let late: usize = (0..10)
            .filter(|i| cache.decide(after_ttl, id(*i), &[]))
            .count();
        assert_eq!(late, 0, "quota expired, fixed rate 0");
    }

    #[test]
    fn the_fixed_rate_samples_that_share_of_trace_ids() {
        let t0 = Instant::now();
        let cache = cache_with(
            vec![rule(
                serde_json::json!({"RuleName": "Default", "Priority": 10000, "ReservoirSize": 0, "FixedRate": 0.1}),
            )],
            t0,
        );
        let sampled = (0..5000).filter(|i| cache.decide(t0, id(*i), &[])).count();
        assert!((400..600).contains(&sampled), "about 10%: {sampled}");
    }

    #[test]
    fn a_target_without_ttl_spends_the_quota_and_a_newer_rule_change_asks_for_rules() {
        let t0 = Instant::now();
        let cache = cache_with(
            vec![rule(
                serde_json::json!({"RuleName": "Default", "Priority": 10000, "ReservoirSize": 1}),
            )],
            t0,
        );
        let (interval, stale) = cache.update_targets(
            &serde_json::from_value(serde_json::json!({
                "SamplingTargetDocuments": [{"RuleName": "Default", "FixedRate": 0.0, "ReservoirQuota": 5}],
                "LastRuleModification": WALL + 1.0
            }))
            .unwrap(),
            t0,
            WALL,
        );
        assert_eq!(interval, None);
        assert!(stale, "rules changed after our fetch");
        assert!(!cache.decide(t0, id(1), &[]), "no TTL: the quota is spent");
    }

    #[test]
    fn unchanged_rules_keep_their_quota_and_counts_across_a_refresh() {
        let t0 = Instant::now();
        let token = rule(serde_json::json!({"RuleName": "token", "Priority": 1, "FixedRate": 0.0}));
        let cache = cache_with(vec![token.clone()], t0);
        cache.update_targets(
            &serde_json::from_value(serde_json::json!({
                "SamplingTargetDocuments": [{"RuleName": "token", "FixedRate": 1.0}]
            }))
            .unwrap(),
            t0,
            WALL,
        );
        cache.decide(t0, id(1), &[]);
        cache.update_rules(vec![token.clone()], t0, WALL);
        assert!(
            cache.decide(t0, id(2), &[]),
            "the target's rate 1.0 survives"
        );
        let stats = cache.statistics(WALL);
        assert_eq!(stats[0].request_count, 2, "counts survive");
        let mut changed = token;
        changed.fixed_rate = 0.5;
        cache.update_rules(vec![changed], t0, WALL);
        assert_eq!(
            cache.statistics(WALL)[0].request_count,
            0,
            "a changed rule starts over"
        );
    }

    #[test]
    fn without_fresh_rules_the_fallback_samples_one_a_second_and_five_percent() {
        let t0 = Instant::now();
        let cache = RuleCache::with_client_id(facts(), "0123456789abcdef01234567".into());
        let sampled = (0..4000).filter(|i| cache.decide(t0, id(*i), &[])).count();
        assert!((150..260).contains(&sampled), "1 + ~5% of 4000: {sampled}");
        assert!(
            cache.statistics(WALL).is_empty(),
            "the fallback reports nothing"
        );

        let cache = cache_with(
            vec![rule(
                serde_json::json!({"RuleName": "Default", "Priority": 10000, "FixedRate": 1.0}),
            )],
            t0,
        );
        assert!(cache.decide(t0, id(3), &[]));
        let expired = t0 + RULES_TTL + Duration::from_secs(1);
        let sampled = (0..4000)
            .filter(|i| cache.decide(expired, id(*i), &[]))
            .count();
        assert!(
            (150..260).contains(&sampled),
            "rules an hour old: fallback, {sampled}"
        );

        cache.update_rules(Vec::new(), t0, WALL);
        let sampled = (0..4000).filter(|i| cache.decide(t0, id(*i), &[])).count();
        assert!(sampled < 300, "no rules at all: fallback, {sampled}");
    }

    #[test]
    fn service_facts_come_from_the_resource() {
        let resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "apuntador-backend"),
                KeyValue::new("cloud.platform", "aws_ecs"),
                KeyValue::new(
                    "aws.ecs.container.arn",
                    "arn:aws:ecs:eu-west-1:1:container/c",
                ),
            ])
            .build();
        assert_eq!(ServiceFacts::from_resource(&resource), facts());
        let lambda = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("cloud.platform", "aws_lambda"),
                KeyValue::new("cloud.resource_id", "arn:aws:lambda:eu-west-1:1:function:f"),
            ])
            .build();
        let f = ServiceFacts::from_resource(&lambda);
        assert_eq!(f.service_type, Some("AWS::Lambda::Function"));
        assert_eq!(
            f.resource_arn.as_deref(),
            Some("arn:aws:lambda:eu-west-1:1:function:f")
        );
    }

    #[test]
    fn statistics_serialise_with_x_ray_field_names() {
        let doc = StatisticsDocument {
            client_id: "0123456789abcdef01234567".into(),
            rule_name: "Default".into(),
            timestamp: 1_800_000_000,
            request_count: 3,
            sampled_count: 2,
            borrow_count: 1,
        };
        assert_eq!(
            serde_json::to_value(&doc).unwrap(),
            serde_json::json!({"ClientID": "0123456789abcdef01234567", "RuleName": "Default",
                "Timestamp": 1_800_000_000u64, "RequestCount": 3, "SampledCount": 2, "BorrowCount": 1})
        );
    }
}
