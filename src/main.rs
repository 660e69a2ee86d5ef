//! Entry point: everything lives in the library; see `apuntador_backend::run`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    apuntador_backend::run().await
}
