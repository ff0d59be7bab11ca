"""Development (`make run`, benchmarks): when DATABASE_URL / REDIS_URL are unset,
start the embedded Postgres+pgvector and Redis under CELESTE_VAR_DIR (default
var/) and use them. This is the only place they are started."""

import os
import warnings

from celeste import metrics
from celeste.devserver.embedded import var_dir

from .base import *  # noqa: F403
from .base import (
    AWS_STORAGE_BUCKET_NAME,
    DATABASE_URL,
    METRICS_ENABLED,
    REDIS_URL,
    env_bool,
    env_str,
    storage_settings,
    url_settings,
)

if METRICS_ENABLED:
    # Before any metric exists. `make run` and the test suite empty it when they start.
    metrics.multiprocess_setup(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or var_dir() / "metrics")
else:
    metrics.multiprocess_off()

_embedded_database = not DATABASE_URL
if not (DATABASE_URL and REDIS_URL):
    warnings.filterwarnings("ignore", module="platformdirs")
    from celeste.devserver.embedded import ensure_services

    _embedded = ensure_services(postgres=not DATABASE_URL, redis=not REDIS_URL)
    DATABASE_URL = DATABASE_URL or _embedded["DATABASE_URL"]
    REDIS_URL = REDIS_URL or _embedded["REDIS_URL"]
    ADMIN_CREDENTIALS_FILE = var_dir() / "admin-credentials.txt"
globals().update(url_settings(DATABASE_URL, REDIS_URL))

# Without an SMTP server configured, the embedded setup prints emails to the worker log.
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if _embedded_database
    else "django.core.mail.backends.smtp.EmailBackend",
)

# Media under the var directory (var/media; the suite's var/test/media), served by the web.
globals().update(
    storage_settings(media_root=env_str("MEDIA_ROOT", str(var_dir() / "media")), bucket=AWS_STORAGE_BUCKET_NAME)
)
MEDIA_SERVE = env_bool("MEDIA_SERVE", True)
