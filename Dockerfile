# syntax=docker/dockerfile:1
# Siphon's image: `cargo xtask image` builds it with docker or podman.
#
# Build stage: the project's own set-up (`cargo xtask setup --build-only`: nightly's rust-src,
# the llvm-N-dev matching nightly's LLVM, bpf-linker built against it; not the lab's and the
# tests' packages), then a release build. agent/build.rs compiles the eBPF crate with nightly
# and embeds the object in the `siphon` binary.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY agent ./agent
COPY agent-common ./agent-common
COPY agent-ebpf ./agent-ebpf
# Workspace members the image does not build, but cargo reads their manifests.
COPY bench ./bench
COPY xtask ./xtask
RUN cargo xtask setup --build-only
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p agent --bin siphon \
    && install -D -m 0755 target/release/siphon /out/siphon

# Runtime stage: glibc and libgcc only (distroless cc), no shell, no package manager: the
# `siphon` binary alone. (Without iproute2's `tc`, a clsact qdisc Siphon created on a kernel
# without tcx, < 6.6, stays behind, empty, when it exits; README.md "Requirements".)
FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/siphon /usr/local/bin/siphon
# Root, on purpose: loading and attaching eBPF needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON in
# the process's effective set. Kubernetes grants a container's added capabilities to a non-root
# process only in its bounding set (no ambient capabilities), and file capabilities on the
# binary would be refused under allowPrivilegeEscalation: false (no_new_privs). So the agent
# runs as uid 0 with those three capabilities and nothing else: the DaemonSet drops ALL,
# forbids escalation, and mounts the root filesystem read-only.
USER 0:0
EXPOSE 9947
ENTRYPOINT ["/usr/local/bin/siphon"]
CMD ["run"]
