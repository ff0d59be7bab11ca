"""Recompute every product's popularity scores from the Postgres aggregates (never from raw events)."""

from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Max
from tqdm import tqdm

from catalog import popularity
from catalog.models import Product

CHUNK = 1000  # products per transaction


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--since", help="Count only buckets from this date on (YYYY-MM-DD, UTC).")
        parser.add_argument("--dry-run", action="store_true", help="Compute and report, write nothing.")

    def handle(self, *args, since=None, dry_run=False, **options):
        if since:
            try:
                since = datetime.fromisoformat(since).replace(tzinfo=UTC)
            except ValueError:
                raise CommandError(f"--since: {since!r} is not a date (YYYY-MM-DD).") from None
        top = Product.objects.aggregate(top=Max("id"))["top"] or 0
        rows = 0
        with tqdm(total=top, unit="id", desc="products", disable=None) as bar:
            for lo in range(0, top + 1, CHUNK):
                # One transaction per chunk: the scores of other products stay readable meanwhile.
                rows += popularity.popularity_scores_recompute(
                    since=since, product_ids=(lo, lo + CHUNK), dry_run=dry_run
                )
                bar.update(min(CHUNK, top + 1 - lo))
        if not dry_run:
            popularity.trending_refresh()
        verb = "would write" if dry_run else "wrote"
        self.stdout.write(self.style.SUCCESS(f"{verb} {rows} score row(s)."))
