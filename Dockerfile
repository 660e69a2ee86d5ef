# The backend's server-mode image (ECS/Fargate, docker compose): a filesystem of the binary, the
# four shared libraries it loads and an unprivileged user; no shell, no package manager. Health
# checks run the binary's own `healthcheck` subcommand. It runs with a read-only root
# filesystem (only /tmp is ever written, and only for a local development CA).
#
#   docker build -t apuntador-backend .
#
# Offline (no registry), the same runtime stage is built from a binary compiled on this machine
# by deploy/container/Dockerfile.prebuilt (scripts/container-image.sh; it checks that the
# runtime stages of both files stay identical).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin apuntador-backend \
    && deploy/container/rootfs.sh target/release/apuntador-backend /rootfs

# --- runtime stage (identical in deploy/container/Dockerfile.prebuilt) ---
FROM scratch
COPY --from=build /rootfs/ /
USER 65532:65532
ENV HOST=0.0.0.0 PORT=8000 LOG_FORMAT=json
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/apuntador-backend", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/apuntador-backend"]
