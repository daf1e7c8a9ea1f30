# The registry-proxy image, built from source (needs registry and crates.io access):
#   docker build -t registry-proxy .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REPO/registry-proxy:TAG --push .
# Without any registry access, scripts/build-image builds the same final stage from a binary compiled
# on the host. See docs/deploy.md (image, multi-arch, running as non-root).
#
# No "# syntax=" line on purpose: it would make BuildKit pull a frontend image.

# ---- builder: a statically linked binary for the platform being built (under emulation for a
# foreign --platform), with the same flags as scripts/build-image.
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN set -eux; \
    target="$(rustc -vV | sed -n 's/^host: //p')"; \
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --locked --target "$target" --bin registry-proxy; \
    scripts/image-rootfs "target/$target/release/registry-proxy" \
      /etc/ssl/certs/ca-certificates.crt /image

# ---- the image: no base, no shell. scripts/build-image builds exactly the lines below, without
# "--from=builder" and with /image/ taken from its build context.
FROM scratch
COPY --from=builder /image/rootfs/ /
COPY --from=builder --chown=65532:65532 /image/volumes/ /
# The seed's port and volumes (rpardini/docker-registry-proxy): a drop-in for its `docker run` line.
ENV LISTEN=0.0.0.0:3128 CACHE_DIR=/docker_mirror_cache CA_DIR=/ca
VOLUME ["/docker_mirror_cache", "/ca"]
EXPOSE 3128
# Root by default, like the seed: Docker creates missing bind-mount directories (the seed's
# `-v $(pwd)/docker_mirror_cache:/docker_mirror_cache`) owned by root, and the seed's /ca volume holds a
# root-owned key. With volumes it can write, run it as 65532 (`--user registry-proxy`, Kubernetes
# runAsUser): named and anonymous volumes start out owned by 65532. See docs/deploy.md.
USER 0:0
LABEL org.opencontainers.image.title="registry-proxy" \
      org.opencontainers.image.description="Caching proxy for container registries" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/registry-proxy"]
