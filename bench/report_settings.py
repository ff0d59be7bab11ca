"""Local settings with the default storage under REPORT_BENCH_MEDIA_ROOT (var/bench/media),
for the reports benchmark's worker (bench/reports.py)."""

import os

from django.conf import global_settings

from celeste.settings.local import *  # noqa: F403

STORAGES = {
    **global_settings.STORAGES,
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": os.environ["REPORT_BENCH_MEDIA_ROOT"]},
    },
}
