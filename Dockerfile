# One image for `ferry operator` and `ferry worker` (the entrypoint is `ferry`; the command picks
# the part). Build: docker build -t ferry:0.1.0 .
#
# Stage 1 builds a release binary with the locked dependencies.
FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin ferry && strip target/release/ferry

# Stage 2: glibc, CA certificates and nothing else; runs as an unprivileged user (uid 65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/ferry /usr/local/bin/ferry
USER nonroot:nonroot
# /metrics, /healthz and /readyz stay on loopback (the binary's default 127.0.0.1:9090) unless
# the deployer opens them: FERRY_LISTEN=0.0.0.0:9090 (the template's MetricsListen parameter).
ENV FERRY_LOG_FORMAT=json
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/ferry"]
CMD ["operator"]
