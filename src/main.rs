//! Entry point: everything lives in the library; see `apuntador_backend::run`.

/// Only with `--features mimalloc`, for the allocator comparison in scripts/bench-profiles.sh.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    apuntador_backend::run().await
}
