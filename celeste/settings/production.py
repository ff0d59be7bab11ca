"""Production (the Docker image, docker-compose). Refuses to start without the
settings a deployment must choose, or with the development defaults of secrets."""

import os

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import (
    DEV_SECRET_KEY,
    DEV_TASK_SIGNING_KEY,
    DEV_WEBHOOK_SECRET,
    IMAGE_URL_ALLOW_LOOPBACK,
    METRICS_ENABLED,
    PAYMENT_WEBHOOK_SECRETS,
    PUSH_ALLOW_PRIVATE_HOSTS,
    TASK_SIGNING_ENABLED,
    TASK_SIGNING_KEYS,
    env_bool,
    env_int,
    env_str,
    logging_config,
)

REQUIRED = {
    "DJANGO_SECRET_KEY": "a long random string (python -c 'import secrets; print(secrets.token_urlsafe(64))')",
    "DATABASE_URL": "postgres://user:password@host:5432/celeste",
    "REDIS_URL": "redis://host:6379/0",
    "DJANGO_ALLOWED_HOSTS": "the host names the site answers to, comma-separated",
    "PAYMENT_WEBHOOK_SECRETS": "the payment provider's webhook signing secret(s), comma-separated",
    "TASK_SIGNING_KEYS": "task message signing key(s), comma-separated, first signs (secrets.token_urlsafe(64))",
}
if METRICS_ENABLED:
    REQUIRED |= {
        "METRICS_TOKEN": "the bearer token Prometheus sends to /metrics (or METRICS_ENABLED=0)",
        "PROMETHEUS_MULTIPROC_DIR": "an empty directory the processes of this host share, emptied at start (a tmpfs)",
    }


def _problems() -> list[str]:
    problems = [
        f"{name} is not set: {hint}." for name, hint in REQUIRED.items() if not os.environ.get(name, "").strip()
    ]
    if os.environ.get("DJANGO_SECRET_KEY", "").strip() == DEV_SECRET_KEY:
        problems.append("DJANGO_SECRET_KEY is the development default: set a secret one.")
    if os.environ.get("PAYMENT_WEBHOOK_SECRETS", "").strip() and DEV_WEBHOOK_SECRET in PAYMENT_WEBHOOK_SECRETS:
        problems.append("PAYMENT_WEBHOOK_SECRETS holds the development default: set the provider's secret.")
    if PUSH_ALLOW_PRIVATE_HOSTS:
        problems.append("PUSH_ALLOW_PRIVATE_HOSTS is on: it lets users make the workers call internal addresses.")
    if IMAGE_URL_ALLOW_LOOPBACK:
        problems.append("IMAGE_URL_ALLOW_LOOPBACK is on: it lets users make the workers fetch from this host.")
    if os.environ.get("TASK_SIGNING_KEYS", "").strip() and DEV_TASK_SIGNING_KEY in TASK_SIGNING_KEYS:
        problems.append("TASK_SIGNING_KEYS holds the development default: set a secret key.")
    if not TASK_SIGNING_ENABLED:
        problems.append("TASK_SIGNING_ENABLED is off: workers would run any message written to Redis.")
    return problems


if _problems():
    raise ImproperlyConfigured("Production settings refuse to start:\n" + "\n".join(_problems()))

from celeste import metrics  # noqa: E402

if METRICS_ENABLED:
    metrics.multiprocess_setup(os.environ["PROMETHEUS_MULTIPROC_DIR"])
else:
    metrics.multiprocess_off()

DEBUG = False
# TLS ends at the proxy in front of gunicorn; it says so in X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
# Prometheus scrapes the web over the internal network, past the TLS proxy.
SECURE_REDIRECT_EXEMPT = [r"^metrics$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "celeste.devserver"]  # noqa: F405
# One JSON object per log line, for a log collector (LOG_FORMAT=console to read them by eye).
LOG_FORMAT = env_str("LOG_FORMAT", "json")
LOGGING = logging_config(LOG_FORMAT)
