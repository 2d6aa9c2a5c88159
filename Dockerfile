# The importer image: the static musl binary and nothing else. No base image is pulled, so it
# builds on a machine with no network. Build the binary first:
#   cargo build --release --target x86_64-unknown-linux-musl
#   docker build -t ghcr.io/offline-images/offline-images:0.1.0 .
# or run scripts/build-image.sh, which does both and saves the image under dist/.
FROM scratch

# Path of the binary inside the build context (scripts/build-image.sh stages it elsewhere).
ARG BINARY=target/x86_64-unknown-linux-musl/release/offline-images
ARG VERSION=0.1.0

LABEL org.opencontainers.image.title="offline-images" \
      org.opencontainers.image.description="Imports image archives into containerd or Docker on air-gapped nodes" \
      org.opencontainers.image.source="https://github.com/offline-images/offline-images" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY ${BINARY} /offline-images

ENTRYPOINT ["/offline-images"]
CMD ["import"]
