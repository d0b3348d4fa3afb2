# vpcep-approver container image: a locked release build, then a runtime made from
# nothing ("scratch") but the binary, the shared libraries it links (glibc, libgcc_s),
# the CA bundle, /tmp, and passwd/group with the one service user. No shell, no package
# manager, no curl: the HEALTHCHECK is the binary's own `healthcheck` command.
#
#   docker build -t vpcep-approver .        (or podman build --format docker …)
#
# Mount the config and policies read-only at /etc/vpcep-approver; the audit log goes to
# the /var/lib/vpcep-approver volume, or to stdout with [audit] path = "-". Logs go to
# stderr. README "Run it beside your service on Kubernetes" has the whole recipe.

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
# Only what the binary is built from: the manifest, the lock file, the sources, the
# example policies that `demo` embeds, and the bench and test sources the manifest
# declares (cargo reads every declared target, even for one --bin).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY policies ./policies
COPY benches ./benches
COPY tests/it ./tests/it
# Default features: the image also serves `simulate` and `demo`.
RUN cargo build --locked --release --bin vpcep-approver

# The runtime tree, assembled under /rootfs. The libraries are the ones `ldd` lists (the
# build is glibc, not static musl), so the tree follows the binary on any architecture.
# The CA bundle is Debian's Mozilla set as packaged, whatever extra roots the build host
# trusts; a private cloud's CA goes in through the target's ca_file.
RUN set -eu; \
    bin=target/release/vpcep-approver; \
    install -D -m 0755 "$bin" /rootfs/usr/local/bin/vpcep-approver; \
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do cp -L --parents "$lib" /rootfs/; done; \
    install -d -m 0755 /rootfs/etc/ssl/certs /rootfs/etc/vpcep-approver; \
    cat /usr/share/ca-certificates/mozilla/*.crt > /rootfs/etc/ssl/certs/ca-certificates.crt; \
    chmod 0644 /rootfs/etc/ssl/certs/ca-certificates.crt; \
    printf 'vpcep:x:10001:10001:vpcep-approver:/var/lib/vpcep-approver:/sbin/nologin\n' > /rootfs/etc/passwd; \
    printf 'vpcep:x:10001:\n' > /rootfs/etc/group; \
    printf 'hosts: files dns\n' > /rootfs/etc/nsswitch.conf; \
    install -d -m 1777 /rootfs/tmp; \
    install -d -m 0750 -o 10001 -g 10001 /rootfs/var/lib/vpcep-approver

FROM scratch
COPY --from=build /rootfs/ /
USER 10001:10001
ENV VPCEP_APPROVER_CONFIG=/etc/vpcep-approver/config.toml
VOLUME ["/var/lib/vpcep-approver"]
EXPOSE 9464
# Probes /healthz of [http] listen in the mounted config (a wildcard address is probed
# on loopback); exit 0 on 200, 1 otherwise, within 3 s.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/vpcep-approver", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/vpcep-approver"]
CMD ["run"]
