# Release images for both daemons, from one build stage:
#   docker build --target logd   -t hik8s/logd:0.1.0 .
#   docker build --target watchd -t hik8s/watchd:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The same release build CI runs (.ci/run).
RUN cargo build --release --locked -p logd -p watchd

# logd reads the node's root-owned (0640) log files, so it runs as uid 0;
# deploy/logd.yaml drops every capability and makes the root fs read-only.
FROM gcr.io/distroless/cc-debian12 AS logd
COPY --from=build /src/target/release/logd /usr/local/bin/logd
EXPOSE 9600
ENTRYPOINT ["/usr/local/bin/logd"]

FROM gcr.io/distroless/cc-debian12:nonroot AS watchd
COPY --from=build /src/target/release/watchd /usr/local/bin/watchd
USER 65532:65532
EXPOSE 9601
ENTRYPOINT ["/usr/local/bin/watchd"]
