FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DATABASE_PATH=/data/dreamboard.sqlite3

WORKDIR /app
COPY pyproject.toml README.md manifest.yaml ./
COPY bot ./bot
COPY handlers ./handlers
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /app dreamboard \
    && mkdir -p /data && chown dreamboard /data

USER dreamboard
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"3000\")}/healthz')"
CMD ["python", "-m", "bot"]
