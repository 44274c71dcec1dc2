# syntax=docker/dockerfile:1
# miaopi: build wheels (durable-rules needs gcc) in one stage, run without a compiler in the next.

FROM python:3.11-slim-bookworm AS build
# compilers only here; their exact Debian versions do not matter to the wheels
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY approval_service ./approval_service
COPY data_lookups ./data_lookups
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MIAOPI_RULES_DIR=/app/rules \
    MIAOPI_DATABASE_URL=sqlite:////app/var/miaopi.sqlite3
RUN groupadd --system --gid 10001 miaopi \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app miaopi
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels miaopi==0.1.0 && rm -rf /wheels
WORKDIR /app
COPY rules ./rules
RUN mkdir -p /app/var && chown -R 10001:10001 /app/var
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["miaopi", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
