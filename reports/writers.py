"""Writing rows to a local file as they arrive, in constant memory: the csv module,
or XlsxWriter in constant_memory mode (each row is flushed to its temporary file
as soon as the next one starts)."""

import csv
from collections.abc import Callable, Iterable, Iterator

import xlsxwriter
from django.conf import settings

# Excel's last row, the header taking the first.
XLSX_MAX_ROWS = 1_048_575


class ReportTooLarge(Exception):
    """More rows than the format (or REPORT_MAX_ROWS) allows: the report fails for good."""


def counted(rows: Iterable, *, limit: int, every: int, progress: Callable[[int], object]) -> Iterator:
    """The rows, reporting how many went by every ``every`` rows (not per row: one
    UPDATE per row would cost more than the row), and refusing row ``limit + 1``."""
    written = 0
    for row in rows:
        written += 1
        if written > limit:
            raise ReportTooLarge(f"More than {limit} rows; narrow the filters.")
        if written % every == 0:
            progress(written)
        yield row
    progress(written)


def csv_write(path: str, header: list[str], rows: Iterable) -> None:
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)


def xlsx_write(path: str, header: list[str], rows: Iterable) -> None:
    workbook = xlsxwriter.Workbook(
        path,
        {
            "constant_memory": True,
            "tmpdir": settings.REPORT_TMP_DIR or None,
            "remove_timezone": True,  # Excel has no time zones; values are written as in TIME_ZONE
            "default_date_format": "yyyy-mm-dd",
            "strings_to_numbers": False,
            "strings_to_formulas": False,  # a product name starting with "=" stays text
            "strings_to_urls": False,
        },
    )
    try:
        sheet = workbook.add_worksheet("report")
        bold = workbook.add_format({"bold": True})
        sheet.write_row(0, 0, header, bold)
        for number, row in enumerate(rows, 1):
            sheet.write_row(number, 0, row)
    finally:
        workbook.close()


WRITERS = {"csv": (csv_write, None), "xlsx": (xlsx_write, XLSX_MAX_ROWS)}


def max_rows(format: str) -> int:
    format_limit = WRITERS[format][1]
    return min(settings.REPORT_MAX_ROWS, format_limit) if format_limit else settings.REPORT_MAX_ROWS


def write(format: str, path: str, header: list[str], rows: Iterable) -> None:
    WRITERS[format][0](path, header, rows)
