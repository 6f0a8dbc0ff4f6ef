# syntax=docker/dockerfile:1
# jobwarden container image: `docker build -t jobwarden:dev .`
# Build stage: the toolchain matching rust-version in Cargo.toml; Cargo.lock pins every crate.
FROM rust:1.89-bookworm AS build
WORKDIR /src

# Fetch dependencies in a layer of their own, so a source change does not download them again.
# Cargo reads every target the manifest declares before it fetches, so the RUN below stubs each
# of them: the library, the binary and the fleet bench (add a stub here with any new [[bin]],
# [[bench]], [[test]] or [[example]] in Cargo.toml). CI replays this COPY and this RUN in a
# temporary directory (scripts/check-dockerfile-fetch.sh, run by .ci/run), so keep the RUN's
# form: one instruction, the only one with `cargo fetch`.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/fleet.rs \
    && cargo fetch --locked \
    && rm -rf src benches

COPY . .
RUN cargo build --release --locked --offline --bin jobwarden \
    && install -D -m 0755 target/release/jobwarden /out/jobwarden

# Runtime stage: glibc and CA certificates, no shell, no package manager, non-root (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/jobwarden /usr/local/bin/jobwarden
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/jobwarden"]
CMD ["run", "--metrics-listen", "0.0.0.0:9090"]
