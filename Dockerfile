# syntax=docker/dockerfile:1
# canaryd: a static binary on distroless, running as non-root.
#   docker build -t canaryd --build-arg VERSION=$(git describe --always) .
#   docker run -p 8080:8080 -v $PWD/my-config.yaml:/etc/canaryd/config.yaml:ro canaryd
# The image ships no config: mount yours at /etc/canaryd/config.yaml (listen
# on ":8080", not 127.0.0.1, to be reachable; state_dir /var/lib/canaryd).

# golang:1.26 is the newest Go 1.26.x: go.mod needs 1.26.9 or later, the
# first with the HTTP/2 server fix of GO-2026-6617 (docs/tls.md), and an
# older image refuses to build rather than build a vulnerable binary.
FROM golang:1.26 AS build
ARG VERSION=dev
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/canaryd ./cmd/canaryd
# The state directory must belong to the non-root user: the image's root
# filesystem is meant to be read-only.
RUN mkdir -p /out/state

FROM gcr.io/distroless/static-debian12:nonroot AS run
COPY --from=build /out/canaryd /usr/local/bin/canaryd
COPY --from=build --chown=65532:65532 /out/state /var/lib/canaryd
USER 65532:65532
WORKDIR /var/lib/canaryd
# 8080: the proxy. 9901: the admin listener (/metrics, /healthz, /readyz,
# API, dashboard); bind it beyond loopback only with admin.token_file set.
EXPOSE 8080 9901
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["canaryd", "healthcheck", "--admin", "127.0.0.1:9901"]
ENTRYPOINT ["canaryd"]
CMD ["run", "--config", "/etc/canaryd/config.yaml"]
