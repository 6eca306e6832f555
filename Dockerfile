# scep-server container: gunicorn (buffering gthread workers) serving the SCEP CA on SCEP_SERVER_BIND.
# Data (CA keys, SQLite database) lives in /var/lib/scep-server: mount a volume there (owned by uid 10001).
# docs/production.md has the rest; tests/interop/test_container_steps.py runs these steps without an engine.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY scep_server ./scep_server
RUN pip install --no-cache-dir --prefix=/install -c constraints.txt '.[postgres]'

FROM python:3.11-slim
RUN useradd --system --home-dir /var/lib/scep-server --create-home --uid 10001 --user-group scep \
    && chmod 0700 /var/lib/scep-server
COPY --from=build /install /usr/local
COPY config/example.yaml /etc/scep-server/example.yaml
ENV SCEP_SERVER_DATA_DIR=/var/lib/scep-server \
    SCEP_SERVER_BIND=0.0.0.0:8080 \
    SCEP_SERVER_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
USER scep
WORKDIR /var/lib/scep-server
VOLUME ["/var/lib/scep-server"]
EXPOSE 8080
# /livez on the port SCEP_SERVER_BIND names (readiness, /readyz, is for load balancers).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD ["python", "-m", "scep_server.healthcheck"]
ENTRYPOINT ["scep-server"]
CMD ["serve", "--init-if-missing"]
