# ironlb's two images, for those with Docker (BuildKit, the default since Docker 23):
#
#   docker build --target ironlb-ccm     --build-arg VERSION=v0.1.0 --build-arg COMMIT=$(git rev-parse HEAD) \
#       --build-arg CREATED=$(git log -1 --format=%cI) -t ghcr.io/ironlb/ironlb-ccm:v0.1.0 .
#   docker build --target ironlb-speaker --build-arg VERSION=v0.1.0 --build-arg COMMIT=$(git rev-parse HEAD) \
#       --build-arg CREATED=$(git log -1 --format=%cI) -t ghcr.io/ironlb/ironlb-speaker:v0.1.0 .
#
# Without --target it builds ironlb-ccm. Add --platform linux/amd64,linux/arm64 (buildx) for
# both architectures; the Go stage cross-compiles on the build machine's own platform.
# Without Docker, `make images` builds the same images as tar files (hack/images): same
# binaries, user, entrypoint and labels, on an empty base instead of distroless.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=v0.1.0
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w -X github.com/ironlb/ironlb/internal/version.Version=${VERSION} -X github.com/ironlb/ironlb/internal/version.Commit=${COMMIT}" \
      -o /out/ ./cmd/ironlb-ccm ./cmd/ironlb-speaker

# What both images share: the base, the labels, the user.
FROM gcr.io/distroless/static:nonroot AS base
ARG VERSION=v0.1.0
ARG COMMIT=unknown
ARG CREATED=1970-01-01T00:00:00Z
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/ironlb/ironlb" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
WORKDIR /

FROM base AS ironlb-speaker
LABEL org.opencontainers.image.title="ironlb-speaker" \
      org.opencontainers.image.description="ironlb speaker: makes LoadBalancer addresses reachable from each node (L2 ARP/NDP or BGP)"
COPY --from=build /out/ironlb-speaker /ironlb-speaker
ENTRYPOINT ["/ironlb-speaker"]

# Last, so that a plain `docker build .` builds it.
FROM base AS ironlb-ccm
LABEL org.opencontainers.image.title="ironlb-ccm" \
      org.opencontainers.image.description="ironlb cloud-controller-manager: assigns LoadBalancer Service addresses from IPPools"
COPY --from=build /out/ironlb-ccm /ironlb-ccm
ENTRYPOINT ["/ironlb-ccm"]
