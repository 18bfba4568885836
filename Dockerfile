# syntax=docker/dockerfile:1
# One image holding meridian, meridian-agent and meridian-proxy; the manifests
# in deploy/ give each container its command. Build from the repository root:
#   docker build -t registry.example.com/meridian:0.1.0 .

# --- build: the workspace's pinned toolchain (rust-toolchain.toml) on Debian 12 ---
FROM rust:1.95-bookworm AS builder
# RocksDB: bindgen loads libclang to generate its bindings, clang builds its C++.
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The caches keep the registry and RocksDB's objects between builds; the
# binaries are copied out in the same step because the target cache is not
# part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin meridian --bin meridian-agent \
 && cargo build --profile proxy --locked --bin meridian-proxy \
 && mkdir -p /out \
 && cp target/release/meridian target/release/meridian-agent target/proxy/meridian-proxy /out/

# --- runtime: the same Debian, non-root ---
# Not distroless: the control plane's entrypoint is a few lines of /bin/sh
# that turn the StatefulSet pod's ordinal into its node id. meridian links
# libstdc++ (RocksDB); all three link glibc and libgcc_s.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 meridian \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin meridian
COPY --from=builder /out/ /usr/local/bin/
USER 65532:65532
# No entrypoint: `docker run IMAGE meridian-proxy --help`, and each Kubernetes
# container names its binary.
CMD ["meridian", "--help"]
