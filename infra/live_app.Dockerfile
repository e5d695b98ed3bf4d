# payment-service (live_app) and the replayer CLI in one image, built from this repository.
FROM python:3.11.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY generator ./generator
COPY replayer ./replayer
COPY live_app ./live_app
COPY infra ./infra
COPY recordings ./recordings
RUN pip install --no-cache-dir ".[live]"
ENV HOST=0.0.0.0 PORT=8000
EXPOSE 8000
CMD ["python", "-m", "live_app"]
