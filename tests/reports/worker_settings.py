"""Settings for the worker of tests/reports/test_worker.py: the test settings, with
the default storage in the test's own folder (REPORTS_TEST_MEDIA_ROOT), the one the
test process reads the files from."""

import os

from django.conf import global_settings

from celeste.settings.test import *  # noqa: F403

STORAGES = {
    **global_settings.STORAGES,
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": os.environ["REPORTS_TEST_MEDIA_ROOT"]},
    },
}
