# syntax=docker/dockerfile:1

# Build:  docker build -t local-pv-provisioner:dev .
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.

# ---- builder: a fully static binary (musl, no libc needed at run time) ----
FROM rust:1.95-slim-bookworm AS builder

# musl-gcc is needed because ring compiles C and assembly for the musl target.
# The version is pinned to the one bookworm ships.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
    && rm -rf /var/lib/apt/lists/*

RUN rustup target add x86_64-unknown-linux-musl
ENV CC_x86_64_unknown_linux_musl=musl-gcc

WORKDIR /src
# The whole crate (minus what .dockerignore drops), so that targets Cargo.toml
# may declare beside src/ (tests, benches, build.rs) are present.
COPY . .

# The registry and target directories are cache mounts, so they are not in the
# layer: copy the binary out of the target directory before the RUN ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl \
    && install -D -m 0755 target/x86_64-unknown-linux-musl/release/local-pv-provisioner \
        /out/local-pv-provisioner

# ---- runtime: distroless static (CA certificates, /etc/passwd, /tmp; no shell) ----
FROM gcr.io/distroless/static-debian12:nonroot

COPY --from=builder /out/local-pv-provisioner /usr/local/bin/local-pv-provisioner

# The provisioner opens the host's raw block devices (under the hostPath-mounted
# /dev) for reading and writing with O_DIRECT, and takes flock on them. Device
# nodes are root-owned (mode 0660, group disk), so the process runs as uid 0; the
# DaemonSet also makes the container privileged, since the device cgroup of an
# unprivileged container refuses opening block devices at all. Everything else
# is locked down in the pod spec (read-only root filesystem, no host network or
# PID namespace). The :nonroot variant is the same image with uid 65532 as its
# default; uid 0 is set here explicitly so that the choice is visible rather
# than implied by a tag.
# hadolint ignore=DL3002
USER 0:0

EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/local-pv-provisioner"]
