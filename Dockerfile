# One image for web and workers. The torch wheels are the CUDA build: the same image runs
# on GPU nodes (worker-gpu) and on CPU (web, worker-cpu).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 STATIC_MANIFEST=1
WORKDIR /app

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN DATABASE_URL=postgres://build@localhost/build SECRET_KEY=build-only-not-secret \
    python manage.py collectstatic --noinput \
 && useradd --create-home --uid 1000 simsite && mkdir -p /data/media /data/private && chown -R simsite /data /app
USER simsite

EXPOSE 8000
CMD ["gunicorn", "simsite.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "8", "--timeout", "120"]
