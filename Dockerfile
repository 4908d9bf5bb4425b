# A streamkit worker image: the package (built into a wheel here) and the example apps.
#   docker build -t streamkit .
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=host:9092 streamkit worker apps.shop:app
# For your own app: FROM this image, COPY your modules into /app, and set the command.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamkit ./streamkit
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 streamkit \
    && mkdir -p /var/lib/streamkit \
    && chown streamkit /var/lib/streamkit
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY apps ./apps
# state on a volume; HTTP (dashboard, /metrics, /status, /tables) on 8080 of every address
ENV PYTHONUNBUFFERED=1 \
    STREAMKIT_WORKDIR=/var/lib/streamkit \
    STREAMKIT_WEB_HOST=0.0.0.0 \
    STREAMKIT_WEB_PORT=8080
VOLUME ["/var/lib/streamkit"]
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s \
    CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/status/live', timeout=2)"
ENTRYPOINT ["streamkit"]
CMD ["worker", "apps.shop:app"]
