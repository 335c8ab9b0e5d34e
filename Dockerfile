# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, ship only the binary on distroless.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p onecard \
    && cp target/release/onecard /onecard \
    && mkdir -p /var-lib-onecard

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /onecard /usr/local/bin/onecard
COPY --from=build --chown=65532:65532 /var-lib-onecard /var/lib/onecard
USER 65532:65532
ENV ONECARD_BIND=0.0.0.0:8080 \
    ONECARD_DATA_DIR=/var/lib/onecard \
    ONECARD_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/onecard"]
CMD ["serve"]
