# regserve container: a release build, the ONNX Runtime library taken from the PyPI wheel
# (no other download), a non-root user, the registry/data directory as a volume.
#
#   docker build -t regserve .
#   docker run -p 5000:5000 -v regserve-data:/data regserve serve -m models:/iris/Production
#   docker run -p 5000:5000 -e MLFLOW_TRACKING_URI=http://mlflow:5000 regserve serve -m models:/fraud@champion

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml build.rs ./
COPY migrations migrations
COPY proto proto
COPY src src
RUN cargo build --release --locked --bin regserve

FROM python:3.11-slim-bookworm AS onnxruntime
ARG ORT_VERSION=1.32.0
RUN python -m pip download --no-deps --only-binary=:all: "onnxruntime==${ORT_VERSION}" -d /wheel \
 && python -c "import glob, zipfile; z = zipfile.ZipFile(glob.glob('/wheel/*.whl')[0]); \
open('/libonnxruntime.so', 'wb').write(z.read('onnxruntime/capi/libonnxruntime.so.${ORT_VERSION}'))"

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin regserve \
 && mkdir -p /data && chown regserve:regserve /data
COPY --from=build /src/target/release/regserve /usr/local/bin/regserve
COPY --from=onnxruntime /libonnxruntime.so /usr/local/lib/libonnxruntime.so
# Inside a container the server must listen on all interfaces to be reachable through -p.
ENV ORT_DYLIB_PATH=/usr/local/lib/libonnxruntime.so \
    REGSERVE_DATA_DIR=/data \
    REGSERVE_HOST=0.0.0.0 \
    REGSERVE_PORT=5000
VOLUME ["/data"]
USER regserve
WORKDIR /data
EXPOSE 5000
ENTRYPOINT ["regserve"]
CMD ["--help"]
