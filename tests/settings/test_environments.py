"""Settings per environment: production refuses what a deployment must not run
with and passes Django's deploy checks; base has no side effects."""

import os
import secrets
import subprocess
import sys
import tempfile

import pytest

from celeste.settings.base import BASE_DIR, DEV_SECRET_KEY, DEV_TASK_SIGNING_KEY, DEV_WEBHOOK_SECRET

PRODUCTION_ENV = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
    "DATABASE_URL": "postgres://celeste:secret@db.internal:5432/celeste",
    "REDIS_URL": "redis://redis.internal:6379/0",
    "DJANGO_ALLOWED_HOSTS": "shop.example.com",
    "PAYMENT_WEBHOOK_SECRETS": "whsec_live_1234",
    "TASK_SIGNING_KEYS": secrets.token_urlsafe(64),
    "METRICS_TOKEN": secrets.token_urlsafe(32),
    "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="celeste-metrics-"),
}


def manage(*args: str, settings: str, env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION_ENV and k != "CELESTE_VAR_DIR"}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, "DJANGO_SETTINGS_MODULE": settings, **env},
    )


def test_check_deploy_is_clean_under_production_settings():
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING", settings="celeste.settings.production", env=PRODUCTION_ENV
    )

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("name", sorted(PRODUCTION_ENV))
def test_production_refuses_to_start_without(name):
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != name}

    result = manage("check", settings="celeste.settings.production", env=env)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"{name} is not set" in result.stderr


def test_production_without_metrics_needs_no_metrics_settings():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k not in ("METRICS_TOKEN", "PROMETHEUS_MULTIPROC_DIR")}

    result = manage("check", settings="celeste.settings.production", env={**env, "METRICS_ENABLED": "0"})

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DJANGO_SECRET_KEY", DEV_SECRET_KEY),
        ("PAYMENT_WEBHOOK_SECRETS", DEV_WEBHOOK_SECRET),
        ("TASK_SIGNING_KEYS", f"{secrets.token_urlsafe(64)},{DEV_TASK_SIGNING_KEY}"),
    ],
)
def test_production_refuses_the_development_defaults(name, value):
    result = manage("check", settings="celeste.settings.production", env={**PRODUCTION_ENV, name: value})

    assert result.returncode != 0
    assert (
        f"{name} is the development default" in result.stderr
        or f"{name} holds the development default" in result.stderr
    )


def test_production_refuses_unsigned_task_messages():
    result = manage(
        "check", settings="celeste.settings.production", env={**PRODUCTION_ENV, "TASK_SIGNING_ENABLED": "0"}
    )

    assert result.returncode != 0
    assert "TASK_SIGNING_ENABLED is off" in result.stderr


def test_base_settings_need_no_environment_and_start_no_server(tmp_path):
    """The image collects static files with them at build time, with no database or Redis."""
    result = manage(
        "collectstatic",
        "--noinput",
        "--dry-run",
        settings="celeste.settings.base",
        env={"CELESTE_VAR_DIR": str(tmp_path / "var"), "DATABASE_URL": "", "REDIS_URL": ""},
    )

    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize(("env", "formatter"), [({}, "json"), ({"LOG_FORMAT": "console"}, "console")])
def test_production_logs_json_unless_log_format_says_console(env, formatter):
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.LOGGING['handlers']['console']['formatter'])",
        settings="celeste.settings.production",
        env={**PRODUCTION_ENV, **env},
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == formatter


def test_an_unknown_log_format_refuses_to_start():
    result = manage("check", settings="celeste.settings.production", env={**PRODUCTION_ENV, "LOG_FORMAT": "xml"})

    assert result.returncode != 0
    assert "LOG_FORMAT must be 'json' or 'console', not 'xml'" in result.stderr


def test_production_refuses_to_let_push_reach_private_hosts():
    """PUSH_ALLOW_PRIVATE_HOSTS is for the loopback push receiver of development and tests."""
    result = manage(
        "check", settings="celeste.settings.production", env={**PRODUCTION_ENV, "PUSH_ALLOW_PRIVATE_HOSTS": "1"}
    )

    assert result.returncode != 0
    assert "PUSH_ALLOW_PRIVATE_HOSTS is on" in result.stderr


def test_production_refuses_to_let_image_urls_reach_loopback():
    """IMAGE_URL_ALLOW_LOOPBACK is for the loopback image server of tests."""
    result = manage(
        "check", settings="celeste.settings.production", env={**PRODUCTION_ENV, "IMAGE_URL_ALLOW_LOOPBACK": "1"}
    )

    assert result.returncode != 0
    assert "IMAGE_URL_ALLOW_LOOPBACK is on" in result.stderr


def test_with_a_bucket_the_default_storage_is_s3_on_the_cdn_domain():
    result = manage(
        "shell",
        "-c",
        "from django.core.files.storage import storages; s = storages['default']; "
        "print(type(s).__name__, s.url('images/a.webp'))",
        settings="celeste.settings.production",
        env={**PRODUCTION_ENV, "AWS_STORAGE_BUCKET_NAME": "media", "AWS_S3_CUSTOM_DOMAIN": "cdn.example.com"},
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == ["MediaS3Storage", "https://cdn.example.com/images/a.webp"]
