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
# Liveness: /healthz answers 200 whenever llmtap serves, also while a large store opens
# (/readyz says when it is open). bash's /dev/tcp, as the image has no curl.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8081 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/llmtap"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--api-listen", "0.0.0.0:8081", "--data-dir", "/data"]
