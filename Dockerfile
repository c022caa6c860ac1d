# The operator image: build with Rust, run on distroless as a non-root user.
# Not built in this repository's CI (its machines have no container engine); build it with
#   docker build -t ghcr.io/sovereign-ai/sovereign-operator:0.1.0 .
# The chart's Deployment runs it with a read-only root filesystem: the binary writes nothing.
# The same image without a container engine: `make image` (scripts/image.sh, umoci + skopeo),
# which the e2e suite builds and runs; tests/operator_image.rs holds the two together.

FROM docker.io/library/rust:1.89-bookworm AS builder
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them: build a stub with the
# real manifest and lock file, then the real sources.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches e2e/tests \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/residency.rs && touch e2e/tests/main.rs \
    && cargo build --release --locked --bin sovereign-operator \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin sovereign-operator

# glibc (rustls with ring needs no OpenSSL, but the binary is dynamically linked to libc).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/sovereign-operator /usr/local/bin/sovereign-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sovereign-operator"]
CMD ["run"]
