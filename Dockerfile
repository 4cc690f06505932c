# energy-ingest: `energy-ingest serve` (HTTP, MQTT, OCPP; bus-mode front end with BUS_URL) or `energy-ingest writer`.
# Not built or started in CI (no container engine there): tests/bus/test_containers.py checks this file against the code.

# Build stage: a virtual environment with the package and its dependencies, wheels only.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/energy-ingest \
    && /opt/energy-ingest/bin/pip install .

# Run stage: the environment alone, run by an unprivileged user.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/energy-ingest --create-home energy-ingest
COPY --from=build /opt/energy-ingest /opt/energy-ingest
ENV PATH=/opt/energy-ingest/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/var/lib/energy-ingest
USER energy-ingest
WORKDIR /var/lib/energy-ingest
VOLUME ["/var/lib/energy-ingest"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
ENTRYPOINT ["energy-ingest"]
CMD ["serve"]
