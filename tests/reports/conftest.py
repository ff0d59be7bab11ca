import csv
import io
from decimal import Decimal

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from orders.models import Order

from ..factories import StoreFactory, UserFactory, place_order


def filesystem_storage(location) -> dict:
    return {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(location)}}


@pytest.fixture
def media(settings, tmp_path):
    """The default storage: the filesystem, under a fresh folder for the test (setting
    STORAGES makes Django build default_storage again)."""
    settings.STORAGES = {**settings.STORAGES, "default": filesystem_storage(tmp_path / "media")}
    settings.REPORT_TMP_DIR = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    return tmp_path / "media"


def stored_files(media) -> list[str]:
    return sorted(str(p.relative_to(media)) for p in media.rglob("*") if p.is_file()) if media.exists() else []


def read_csv(report) -> list[list[str]]:
    with default_storage.open(report.file_name, "rb") as stored:
        return list(csv.reader(io.StringIO(stored.read().decode())))


def sales_fixture(*, day="2026-03-10"):
    """Two stores: store A with two paid orders (2 x 2.50 x2, and 1 x 4.00 x3) on ``day``; store B one pending."""
    store_a, store_b = StoreFactory(code="a-store"), StoreFactory(code="b-store")
    user = UserFactory(is_staff=True)
    first = place_order(user=user, store=store_a, lines=((Decimal("2.50"), 2),))
    second = place_order(user=user, store=store_a, lines=((Decimal("4.00"), 3),))
    third = place_order(user=user, store=store_b, lines=((Decimal("1.00"), 1),))
    at = timezone.datetime.fromisoformat(f"{day}T12:00:00+00:00")
    Order.objects.filter(id__in=[first.id, second.id]).update(status="paid", created_at=at)
    Order.objects.filter(id=third.id).update(created_at=at)
    return store_a, store_b
