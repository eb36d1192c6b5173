# syntax=docker/dockerfile:1
#
# kproxy container image: a static binary on distroless, running as uid 65532.
#
#   docker build -t kproxy:dev --build-arg VERSION="$(git describe --tags --always --dirty)" .
#   docker run --rm -p 8080:8080 kproxy:dev
#
# Configuration, in order of precedence: flags (append them to `docker run kproxy:dev`),
# then KPROXY_* environment variables, then the file at /etc/kproxy/config.yaml (the
# shipped config.yaml; mount your own there read-only to replace it:
# -v "$PWD/config.yaml:/etc/kproxy/config.yaml:ro"), then built-in defaults.
# The HEALTHCHECK probes http://127.0.0.1:8080/healthz: if you move the listen port,
# override it too (docker run --health-cmd, compose healthcheck.test).
# deploy/dockerfile_test.go parses this file and deploy/binary_test.go runs its go build
# line: keep the build command on one line and the runtime rules they assert.

FROM golang:1.26-bookworm AS build
ARG VERSION=dev
WORKDIR /src
# Module downloads get their own layer: it is rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download && go mod verify
COPY . .
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/kproxy ./cmd/kproxy

# static-debian12 has CA certificates, /etc/passwd entries and tzdata but no shell;
# :nonroot runs as uid/gid 65532 by default (made explicit by USER below).
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="kproxy" \
      org.opencontainers.image.description="Caching reverse proxy for Kalshi's Trade API v2" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/kproxy /usr/local/bin/kproxy
COPY config.yaml /etc/kproxy/config.yaml
ENV KPROXY_CONFIG=/etc/kproxy/config.yaml \
    KPROXY_LISTEN=:8080
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/kproxy","healthcheck"]
ENTRYPOINT ["/usr/local/bin/kproxy"]
