"""Report metrics: reports finished (by kind and outcome), rows written, generation time."""

from prometheus_client import Counter, Histogram

REPORTS = Counter("celeste_reports_total", "Reports finished.", ["kind", "outcome"])
REPORT_ROWS = Counter("celeste_report_rows_total", "Rows written into ready reports.", ["kind"])
REPORT_SECONDS = Histogram(
    "celeste_report_generation_seconds",
    "Time to generate a report (query, write, store).",
    ["kind"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600),
)
