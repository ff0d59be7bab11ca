"""Thin tasks: ids in, a service call out.

services imports this module (to enqueue), so it reads services only when a
task runs; that is why the inbox-retry hook is a small lambda."""

from celeste.background.tasks import celeste_task

from . import services


# On the slow queue: a report may read millions of rows. The last failed attempt
# marks the report failed with the reason; a retry from the inbox makes it pending again.
@celeste_task(
    "reports.generate",
    bind=True,
    queue="slow",
    on_inbox_retry=lambda **job: services.report_reopen(**job),
)
def generate_report(self, *, report_id: int) -> str:
    try:
        return services.report_generate(report_id=report_id)
    except Exception as exc:
        if self.request.called_directly or self.request.retries >= self.max_retries:
            services.report_mark_failed(report_id=report_id, error=f"{type(exc).__name__}: {exc}")
        raise


# A beat tick of one schedule (its row's kwargs); a repeated tick makes no second report.
@celeste_task("reports.run_schedule")
def run_report_schedule(*, schedule_id: int) -> int | None:
    report = services.schedule_run(schedule_id=schedule_id)
    return report.id if report else None


@celeste_task("reports.purge", max_retries=0)
def purge_reports() -> int:
    return services.reports_purge()
