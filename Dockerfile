# Build: docker build -t llmtap .
# Run:   docker run -p 8080:8080 -p 8081:8081 -v llmtap-data:/data -e LLMTAP_API_TOKENS=admin:CHANGE-ME llmtap
# The read API serves other hosts only with tokens: without LLMTAP_API_TOKENS (or
# [[api.tokens]] in a mounted config) llmtap refuses to bind it to 0.0.0.0.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY bench ./bench
RUN cargo build --release --locked -p llmtap && strip target/release/llmtap

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data llmtap \
    && mkdir -p /data && chown llmtap /data
COPY --from=build /src/target/release/llmtap /usr/local/bin/llmtap
USER llmtap
VOLUME ["/data"]
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/llmtap"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--api-listen", "0.0.0.0:8081", "--data-dir", "/data"]
