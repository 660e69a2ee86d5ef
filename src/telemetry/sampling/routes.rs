//! Ratios per route (`TRACE_SAMPLING_ROUTES=/oauth/token/{provider}=1,/device/*=0.25`): a root
//! span whose `http.route` matches a pattern is sampled by trace id at that ratio; other spans
//! go to the configured sampler. The route template is known when the request span starts
//! (axum matched it before the request layer ran), so the sampler sees it among the span's
//! first attributes.

use std::sync::Arc;

use opentelemetry::trace::{Link, SpanKind, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingResult, ShouldSample};

use super::wildcard::Wildcard;

/// One `pattern=ratio` pair.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteRatio {
    /// A route template or an X-Ray style wildcard over templates (`/device/*`).
    pub pattern: String,
    pub ratio: f64,
}

/// Parses `pattern=ratio[,pattern=ratio…]`; the error is the pair that does not parse.
pub fn parse(raw: &str) -> Result<Vec<RouteRatio>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (pattern, ratio) = pair.rsplit_once('=').ok_or_else(|| pair.to_owned())?;
            let pattern = pattern.trim();
            let ratio = ratio
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| pair.to_owned())?;
            if !pattern.starts_with('/') && pattern != "*" || Wildcard::compile(pattern).is_err() {
                return Err(pair.to_owned());
            }
            Ok(RouteRatio {
                pattern: pattern.to_owned(),
                ratio,
            })
        })
        .collect()
}

/// Route ratios first, then `otherwise`.
#[derive(Debug, Clone)]
pub struct PerRoute {
    /// Compiled once: matched on every request.
    routes: Arc<[(Wildcard, f64)]>,
    otherwise: Box<dyn ShouldSample>,
}

impl PerRoute {
    /// Routes whose pattern does not compile (which [`parse`] refuses) are left out.
    pub fn new(routes: Vec<RouteRatio>, otherwise: Box<dyn ShouldSample>) -> Self {
        Self {
            routes: routes
                .into_iter()
                .filter_map(|r| Wildcard::compile(&r.pattern).ok().map(|w| (w, r.ratio)))
                .collect(),
            otherwise,
        }
    }
}

impl ShouldSample for PerRoute {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let route = attributes
            .iter()
            .find(|kv| kv.key.as_str() == "http.route")
            .map(|kv| kv.value.as_str());
        if let Some(route) = route
            && let Some(rule) = self
                .routes
                .iter()
                .find(|(pattern, _)| pattern.matches(Some(&route)))
        {
            return Sampler::TraceIdRatioBased(rule.1).should_sample(
                parent_context,
                trace_id,
                name,
                span_kind,
                attributes,
                links,
            );
        }
        self.otherwise
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::trace::SamplingDecision;

    fn decide(sampler: &dyn ShouldSample, route: Option<&'static str>, id: u128) -> bool {
        let attributes: Vec<KeyValue> = route
            .map(|r| vec![KeyValue::new("http.route", r)])
            .unwrap_or_default();
        sampler
            .should_sample(
                None,
                TraceId::from(id),
                "GET",
                &SpanKind::Server,
                &attributes,
                &[],
            )
            .decision
            == SamplingDecision::RecordAndSample
    }

    #[test]
    fn each_route_gets_its_ratio_and_the_rest_the_fallback() {
        let sampler = PerRoute::new(
            parse("/oauth/token/{provider}=1,/device/*=0.5,/=0").unwrap(),
            Box::new(Sampler::AlwaysOff),
        );
        let ids: Vec<u128> = (0..2000u128)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
            .collect();
        let count = |route| {
            ids.iter()
                .filter(|id| decide(&sampler, route, **id))
                .count()
        };
        assert_eq!(count(Some("/oauth/token/{provider}")), 2000);
        assert_eq!(count(Some("/")), 0);
        let device = count(Some("/device/enroll"));
        assert!((800..1200).contains(&device), "about half: {device}");
        assert_eq!(
            count(Some("/config/providers")),
            0,
            "unlisted: the fallback"
        );
        assert_eq!(count(None), 0, "no route: the fallback");
    }

    #[test]
    fn a_trace_keeps_one_decision_per_ratio() {
        let sampler = PerRoute::new(parse("/x=0.3").unwrap(), Box::new(Sampler::AlwaysOff));
        for id in [1u128, 1 << 100, u128::MAX / 3] {
            let first = decide(&sampler, Some("/x"), id);
            assert_eq!(first, decide(&sampler, Some("/x"), id));
            assert_eq!(
                first,
                decide(&Sampler::TraceIdRatioBased(0.3), None, id),
                "the SDK's trace-id ratio"
            );
        }
    }
}
