# scep-server container: gunicorn (gthread) serving the SCEP CA on port 8080.
# Data (CA keys, SQLite database) lives in /var/lib/scep-server: mount a volume there.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scep_server ./scep_server
RUN pip install --no-cache-dir --prefix=/install '.[postgres]'

FROM python:3.11-slim
RUN useradd --system --home-dir /var/lib/scep-server --create-home --uid 10001 scep
COPY --from=build /install /usr/local
COPY config/example.yaml /etc/scep-server/example.yaml
ENV SCEP_SERVER_DATA_DIR=/var/lib/scep-server \
    SCEP_SERVER_BIND=0.0.0.0:8080 \
    PYTHONUNBUFFERED=1
USER scep
WORKDIR /var/lib/scep-server
VOLUME ["/var/lib/scep-server"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz').status == 200 else 1)"
ENTRYPOINT ["scep-server"]
CMD ["serve", "--init-if-missing"]
