//! End-to-end tests of the `doctor` binary: each test starts moto (`MOTO_SERVER`, from
//! scripts/test.sh), builds a deployment in it with the AWS SDK (a stack with the template's
//! outputs and parameters, the function, its role and log group; or an ECS cluster, service and
//! task definition), stands a loopback double of the API in for `ApiUrl` (it answers with an
//! `X-Trace-ID` and writes the trace and the log lines into moto as Lambda would, or withholds
//! them), runs the binary against it, and reads what a user reads: the checks, their fixes, the
//! verdict and the exit status. Where moto lacks an API (X-Ray's `GetTraceSegmentDestination`,
//! ECS tasks' container health) a loopback double answers that call and forwards the rest to
//! moto. Every run's output is searched for the deployment's secrets.

mod cli;
mod ecs;
mod lambda;
mod support;
