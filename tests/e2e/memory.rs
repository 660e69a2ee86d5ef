//! A warm Lambda sandbox serves invocations for hours: the function's resident memory must not
//! grow with the number of invocations it has served. Every invocation here carries its own
//! X-Ray trace header, as under Lambda, because per-invocation values are what leak (a runtime
//! that exports each trace id with `setenv` keeps every one of them: about 170 bytes each).

use crate::support::otlp::OtlpReceiver;
use crate::support::runtime_api::{Event, RuntimeApi};
use crate::support::{Process, binary, lambda_env};

/// Invocations before the first reading: the allocator, connection pools and span batches
/// reach their working size.
const WARM_UP: u32 = 1_000;
/// Invocations between the two readings.
const MEASURED: u32 = 5_000;
/// Allowed growth over [`MEASURED`] invocations; a 170-byte-per-invocation leak is 830 KiB.
const BUDGET_KIB: u64 = 384;

fn rss_kib(process: &Process) -> u64 {
    process
        .status_kib("VmRSS:")
        .unwrap_or_else(|| panic!("no VmRSS for process {}", process.pid()))
}

/// A distinct, well-formed trace header per invocation, as Lambda sends.
fn trace_header(n: u32) -> String {
    format!(
        "Root=1-{}-{n:024x};Parent={n:016x};Sampled=1",
        crate::support::epoch_hex()
    )
}

async fn invoke_many(api: &RuntimeApi, bodies: &[String], from: u32, count: u32) {
    for n in from..from + count {
        let body = bodies[n as usize % bodies.len()].clone();
        let outcome = api
            .invoke(Event {
                body,
                trace_header: Some(trace_header(n)),
            })
            .await;
        assert!(outcome.ok, "invocation {n} failed: {}", outcome.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn resident_memory_does_not_grow_with_invocations() {
    let receiver = OtlpReceiver::start().await;
    let api = RuntimeApi::start().await;
    let mut env = lambda_env(&format!("http://{}", receiver.http_addr));
    env.push(("AWS_LAMBDA_RUNTIME_API".into(), api.addr.to_string()));
    let process = Process::spawn(&binary(), &[], &env);
    let bodies: Vec<String> = ["http-api-config-providers.json", "http-api-not-found.json"]
        .iter()
        .map(|file| crate::support::sample_event(file))
        .collect();

    invoke_many(&api, &bodies, 0, WARM_UP).await;
    let before = rss_kib(&process);
    invoke_many(&api, &bodies, WARM_UP, MEASURED).await;
    let after = rss_kib(&process);

    let growth = after.saturating_sub(before);
    eprintln!("VmRSS {before} -> {after} KiB over {MEASURED} invocations");
    assert!(
        growth <= BUDGET_KIB,
        "resident memory grew by {growth} KiB ({before} -> {after} KiB) over {MEASURED} \
         invocations, {} bytes each; budget {BUDGET_KIB} KiB",
        growth * 1024 / u64::from(MEASURED)
    );
}
