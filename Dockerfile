# The rightsizer webhook image.
#
#   docker build -t REGISTRY/rightsizer:0.1.0 .        (or: podman build / buildah bud)
#
# Build stage: a release build of the `rightsizer` binary from the locked dependency set.
# Runtime: an empty image holding only the stripped binary, the shared libraries it links,
# a non-root user and the CA bundle (tests/image/rootfs.sh assembles it; the tests build
# the same filesystem without a container engine, see tests/image/build.sh).
#
# Base images are pinned by digest (a tag can be moved); the update procedure is in
# README.md ("Images"). tests/deploy checks every reference carries a digest.
ARG RUST_IMAGE=rust:1.85-bookworm@sha256:e51d0265072d2d9d5d320f6a44dde6b9ef13653b035098febd68cce8fa7c0bc4

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY webhook webhook
# The workspace's test package is tests/ (and the benches live under tests/bench); cargo reads
# its manifest to load the workspace and builds nothing of it here.
COPY tests tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin rightsizer \
 && cp target/release/rightsizer /rightsizer
RUN tests/image/rootfs.sh /rightsizer /rootfs

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="rightsizer" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook that sizes memory and CPU from real usage" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /rootfs/ /
USER 65532:65532
WORKDIR /home/nonroot
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/rightsizer"]
CMD ["serve"]
