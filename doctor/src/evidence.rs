//! What counts as the backend's spans in what X-Ray and `aws/spans` return for a trace id.
//! Lambda writes segments of its own for every sampled invocation of an actively traced
//! function (origin `AWS::Lambda`, `AWS::Lambda::Function`), whatever the transport; finding
//! only those proves tracing works but that the backend's spans never arrived. The backend's
//! request span carries its route (`http_route` as annotation, `http.route` as attribute), and
//! its segments outside Lambda are named after the service.

use serde_json::Value;

/// Whether `value` holds, at any depth, an object key naming the request's route.
fn carries_route(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(key, inner)| key == "http_route" || key == "http.route" || carries_route(inner)),
        Value::Array(list) => list.iter().any(carries_route),
        _ => false,
    }
}

/// Whether `value` holds, at any depth, `service.name` set to `service`.
fn names_service(value: &Value, service: &str) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(key, inner)| {
            (key == "service.name" && inner.as_str() == Some(service))
                || names_service(inner, service)
        }),
        Value::Array(list) => list.iter().any(|v| names_service(v, service)),
        _ => false,
    }
}

/// An X-Ray segment document (with its subsegments) holds the backend's spans.
pub fn segment_is_backends(document: &Value, service: &str) -> bool {
    let lambdas = document
        .get("origin")
        .and_then(Value::as_str)
        .is_some_and(|o| o.starts_with("AWS::Lambda"));
    carries_route(document)
        || (!lambdas && document.get("name").and_then(Value::as_str) == Some(service))
}

/// An `aws/spans` event is a span of the trace (`w3c` id) and of the backend.
pub fn span_is_backends(event: &Value, w3c: &str, service: &str) -> bool {
    event.get("traceId").and_then(Value::as_str) == Some(w3c)
        && (carries_route(event) || names_service(event, service))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lambdas_own_segments_are_not_the_backends() {
        let lambda = json!({"name": "apuntador-backend-BackendFunction-1", "origin": "AWS::Lambda::Function", "subsegments": [{"name": "Invocation"}, {"name": "Overhead"}]});
        assert!(!segment_is_backends(&lambda, "apuntador-backend"));
        let named_like_the_service = json!({"name": "apuntador-backend", "origin": "AWS::Lambda"});
        assert!(!segment_is_backends(
            &named_like_the_service,
            "apuntador-backend"
        ));
    }

    #[test]
    fn the_backends_spans_are_found_by_route_or_service() {
        let daemon = json!({"name": "fn", "origin": "AWS::Lambda::Function", "subsegments": [{"name": "GET /", "annotations": {"http_route": "/"}}]});
        assert!(segment_is_backends(&daemon, "apuntador-backend"));
        let ecs = json!({"name": "apuntador-backend", "origin": "AWS::ECS::Container"});
        assert!(segment_is_backends(&ecs, "apuntador-backend"));
        let span = json!({"traceId": "6b04aa010123456789abcdef01234567", "attributes": {"http.route": "/"}});
        assert!(span_is_backends(
            &span,
            "6b04aa010123456789abcdef01234567",
            "x"
        ));
        assert!(!span_is_backends(
            &span,
            "00000000000000000000000000000000",
            "x"
        ));
        let by_resource = json!({"traceId": "t", "resource": {"attributes": {"service.name": "apuntador-backend"}}});
        assert!(span_is_backends(&by_resource, "t", "apuntador-backend"));
        assert!(!span_is_backends(&by_resource, "t", "other"));
    }
}
