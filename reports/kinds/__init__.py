"""Report kinds: each is a small module with its columns, the filters that apply
to it and ``query(filters) -> (sql, params)``, one SQL statement whose rows are
the report's rows. The same statement feeds the server-side cursor and, in the
benchmark, ``COPY … TO STDOUT``.

``request_clean`` is the one check of a request (API, admin form, schedules):
it returns the filters as stored on the Report, or raises ReportInvalid naming
every bad field."""

import datetime
from types import ModuleType

from django.conf import settings

from catalog.models import Store

from ..models import ReportFormat, ReportKind
from . import low_stock, notifications, odoo_sync, sales, top_products

MODULES: dict[str, ModuleType] = {
    ReportKind.SALES: sales,
    ReportKind.TOP_PRODUCTS: top_products,
    ReportKind.LOW_STOCK: low_stock,
    ReportKind.NOTIFICATIONS: notifications,
    ReportKind.ODOO_SYNC: odoo_sync,
}
# Every filter a request may carry; each kind says which of them apply (APPLIES).
FILTERS = ("date_from", "date_to", "stores", "category", "limit", "threshold")


class ReportInvalid(Exception):
    """Bad request input: ``errors`` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


def columns(kind: str) -> list[str]:
    return list(MODULES[kind].COLUMNS)


def query(kind: str, filters: dict) -> tuple[str, dict]:
    return MODULES[kind].query(filters)


def _date(value, field: str, errors: dict) -> datetime.date | None:
    if isinstance(value, datetime.date):
        return value
    try:
        return datetime.date.fromisoformat(str(value))
    except ValueError:
        errors[field] = "Not a date (YYYY-MM-DD)."
        return None


def _positive_int(value, field: str, errors: dict, *, maximum: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit():
        errors[field] = "Not a whole number."
        return None
    number = int(value)
    if not 1 <= number <= maximum:
        errors[field] = f"Must be between 1 and {maximum}."
        return None
    return number


def request_clean(*, kind, format, filters: dict) -> dict:
    """The filters of a valid request (JSON: dates as ISO strings, store ids sorted),
    or ReportInvalid naming each bad field; nothing is written here."""
    errors: dict[str, str] = {}
    if kind not in MODULES:
        raise ReportInvalid({"kind": f"Unknown kind {kind!r}; one of {', '.join(MODULES)}."})
    if format not in ReportFormat.values:
        errors["format"] = f"Unknown format {format!r}; one of {', '.join(ReportFormat.values)}."
    applies = MODULES[kind].APPLIES
    given = {name: value for name, value in filters.items() if value not in (None, "", [])}
    for name in given:
        if name not in FILTERS:
            errors[name] = "Unknown filter."
        elif name not in applies:
            errors[name] = f"Does not apply to {kind} reports."
    clean: dict = {}
    if "date_from" in applies:
        for field in ("date_from", "date_to"):
            if field not in given:
                errors[field] = "Required for this kind."
        date_from = _date(given["date_from"], "date_from", errors) if "date_from" in given else None
        date_to = _date(given["date_to"], "date_to", errors) if "date_to" in given else None
        if date_from and date_to:
            if date_to < date_from:
                errors["date_to"] = "Before date_from."
            elif (date_to - date_from).days + 1 > settings.REPORT_MAX_RANGE_DAYS:
                errors["date_to"] = f"The range is longer than {settings.REPORT_MAX_RANGE_DAYS} days."
            else:
                clean.update(date_from=date_from.isoformat(), date_to=date_to.isoformat())
    if "stores" in given:
        clean["stores"] = _stores(given["stores"], errors)
    if "category" in given:
        if not isinstance(given["category"], str) or len(given["category"]) > 100:
            errors["category"] = "Not a category name (text, at most 100 characters)."
        else:
            clean["category"] = given["category"]
    if "limit" in applies:
        clean["limit"] = _positive_int(given.get("limit", 100), "limit", errors, maximum=100_000)
    if "threshold" in applies:
        clean["threshold"] = _positive_int(
            given.get("threshold", settings.REPORT_LOW_STOCK_THRESHOLD), "threshold", errors, maximum=1_000_000
        )
    if errors:
        raise ReportInvalid(errors)
    return clean


def _stores(value, errors: dict) -> list[int]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, str) and v.isdigit()) for v in value
    ):
        errors["stores"] = "Not a list of store ids."
        return []
    ids = sorted({int(v) for v in value})
    unknown = sorted(set(ids) - set(Store.objects.filter(id__in=ids).values_list("id", flat=True)))
    if unknown:
        errors["stores"] = f"Unknown store(s): {', '.join(map(str, unknown))}."
    return ids
