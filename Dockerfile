# Celeste production image: web (default CMD), Celery workers and beat all run from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=celeste.settings.production \
    WEB_CONCURRENCY=2

WORKDIR /app

# torch==2.13.0 is pinned; the extra index supplies its CPU-only build (2.13.0+cpu),
# which pip prefers over PyPI's CUDA build for the same version.
COPY requirements.txt .
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt

COPY . .

# Static files are collected at build time with the base settings, which need no
# environment and connect to nothing. staticfiles/ must be writable by the runtime
# user: `manage.py bootstrap` runs collectstatic again. var/media: uploaded media without S3
# (compose mounts a volume there, which takes this owner). The ONNX encoder files
# (EMBEDDING_BACKEND=onnx, onnx-int8) are made from the bundled weights at build time too, into
# var/models (EMBEDDING_CACHE_DIR), so no container makes its own.
RUN useradd --create-home --uid 10001 --user-group celeste \
 && DJANGO_SETTINGS_MODULE=celeste.settings.base python manage.py collectstatic --noinput \
 && DJANGO_SETTINGS_MODULE=celeste.settings.base python manage.py build_encoder \
 && mkdir -p /app/var/media \
 && chown -R celeste:celeste /app/staticfiles /app/var

USER celeste
EXPOSE 8000

# gunicorn takes its worker count from WEB_CONCURRENCY.
CMD ["gunicorn", "celeste.wsgi", "--bind", "0.0.0.0:8000", "--threads", "4", "--access-logfile", "-"]
