# One image for `ferry operator` and `ferry worker` (the entrypoint is `ferry`; the command picks
# the part). Build for both Fargate architectures (the template's default is ARM64, Graviton):
#   docker buildx build --platform linux/amd64,linux/arm64 -t ferry:0.1.0 .
# Base images are pinned by digest (the multi-architecture index); the tag is in the comment.
# To update: docker buildx imagetools inspect rust:1.94-bookworm (and the distroless tag).
#
# Stage 1 builds a release binary ([profile.release]: LTO, one codegen unit, stripped) with the
# locked dependencies. FERRY_GIT_COMMIT stands in for git, which the build context lacks.
# rust:1.94-bookworm
FROM rust:1.94-bookworm@sha256:6ae102bdbf528294bc79ad6e1fae682f6f7c2a6e6621506ba959f9685b308a55 AS build
ARG FERRY_GIT_COMMIT=unknown
ENV FERRY_GIT_COMMIT=${FERRY_GIT_COMMIT}
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin ferry

# Stage 2: glibc, CA certificates and nothing else; runs as an unprivileged user (uid 65532).
# gcr.io/distroless/cc-debian12:nonroot
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /src/target/release/ferry /usr/local/bin/ferry
USER nonroot:nonroot
# /metrics, /healthz and /readyz stay on loopback (the binary's default 127.0.0.1:9090) unless
# the deployer opens them: FERRY_LISTEN=0.0.0.0:9090 (the template's MetricsListen parameter).
ENV FERRY_LOG_FORMAT=json
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/ferry"]
CMD ["operator"]
