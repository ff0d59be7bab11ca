from django.core.management.base import BaseCommand

from celeste.background.models import FailedTask, FailedTaskStatus
from celeste.background.services import failed_task_retry


class Command(BaseCommand):
    help = "Replay open jobs from the failed-task inbox (all, or those of one task name)."

    def add_arguments(self, parser):
        parser.add_argument("--task", help="Only jobs of this task name, e.g. catalog.embed_products.")
        parser.add_argument("--dry-run", action="store_true", help="List what would be retried; change nothing.")

    def handle(self, *args, task=None, dry_run=False, **options):
        jobs = FailedTask.objects.filter(status=FailedTaskStatus.OPEN)
        if task:
            jobs = jobs.filter(task_name=task)
        ids = list(jobs.values_list("id", flat=True))
        if dry_run:
            for job in jobs:
                self.stdout.write(f"#{job.id} {job.task_name} {job.kwargs} — {job.error[:100]}")
            self.stdout.write(f"Would retry {len(ids)} job(s) (dry run, nothing changed).")
            return
        count = failed_task_retry(failed_task_ids=ids)
        self.stdout.write(self.style.SUCCESS(f"Re-enqueued {count} job(s)."))
