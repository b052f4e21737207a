# One image for every Conclavium component: gateway, sequencer, executor, attestation, operator.
#   docker build -t conclavium .
#   docker run conclavium conclavium-gateway --help
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY conclavium ./conclavium
COPY services ./services
COPY operator ./operator
RUN pip install --no-cache-dir build && python -m build --wheel --outdir /wheels .

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="conclavium" \
      org.opencontainers.image.description="Confidential consortium ledger for Kubernetes"
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl "kopf==1.45.2" && rm -rf /wheels \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin conclavium \
    && mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
WORKDIR /data
ENV PYTHONUNBUFFERED=1 CONCLAVIUM_DATA_DIR=/data
EXPOSE 8000 8090 9100 9200 9300
CMD ["conclavium", "--help"]
