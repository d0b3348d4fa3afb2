# Multi-stage build: a locked release build, then a small non-root runtime with CA
# certificates. Config and policies are mounted read-only at /etc/vpcep-approver; the
# audit log goes to the /var/lib/vpcep-approver volume (or stdout with path = "-").
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY policies ./policies
COPY benches ./benches
COPY tests ./tests
RUN cargo build --locked --release --bin vpcep-approver

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/vpcep-approver --shell /usr/sbin/nologin vpcep \
 && install -d -o vpcep -g vpcep -m 0750 /var/lib/vpcep-approver
COPY --from=build /src/target/release/vpcep-approver /usr/local/bin/vpcep-approver
USER 10001:10001
ENV VPCEP_APPROVER_CONFIG=/etc/vpcep-approver/config.toml
VOLUME ["/var/lib/vpcep-approver"]
EXPOSE 9464
# Needs [http] listen = "0.0.0.0:9464" (or 127.0.0.1:9464) in the mounted config.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
  CMD curl -fsS http://127.0.0.1:9464/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/vpcep-approver"]
CMD ["run"]
