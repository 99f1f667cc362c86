# Builds the ironlb-ccm image used by deploy/ccm.yaml.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags=-s -o /out/ironlb-ccm ./cmd/ironlb-ccm

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/ironlb-ccm /ironlb-ccm
USER 65532:65532
ENTRYPOINT ["/ironlb-ccm"]
