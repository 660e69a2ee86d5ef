//! The Lambda side of telemetry: the runtime layer that flushes spans after each invocation,
//! and the cold-start flag.
//!
//! [`FlushLayer`] wraps the runtime's invocation service, whose future completes once the
//! response has been posted to the Runtime API. Flushing there means the caller never waits
//! for the export, and every span of the invocation has left the process before the runtime
//! polls `/next` (when Lambda may freeze the sandbox).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use lambda_runtime::LambdaInvocation;
use tower::{Layer, Service};

use super::Telemetry;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

static COLD_START: AtomicBool = AtomicBool::new(true);

/// `true` for the first invocation this process serves, `false` afterwards.
pub fn take_cold_start() -> bool {
    COLD_START.swap(false, Ordering::Relaxed)
}

/// Runtime layer that flushes spans once the response is posted.
#[derive(Clone)]
pub struct FlushLayer {
    telemetry: Telemetry,
}

impl FlushLayer {
    pub fn new(telemetry: Telemetry) -> Self {
        Self { telemetry }
    }
}

impl<S> Layer<S> for FlushLayer {
    type Service = FlushService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FlushService {
            inner,
            telemetry: self.telemetry.clone(),
        }
    }
}

/// Service created by [`FlushLayer`].
pub struct FlushService<S> {
    inner: S,
    telemetry: Telemetry,
}

impl<S> Service<LambdaInvocation> for FlushService<S>
where
    S: Service<LambdaInvocation, Response = (), Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        let respond = self.inner.call(invocation);
        let telemetry = self.telemetry.clone();
        Box::pin(async move {
            let result = respond.await;
            telemetry.flush().await;
            result
        })
    }
}
