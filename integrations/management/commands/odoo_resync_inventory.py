"""Push every stocked (product, store) pair's current quantity to Odoo."""

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count
from tqdm import tqdm

from catalog.models import StockLevel, Store
from integrations.odoo import services
from integrations.odoo.client import odoo_enabled
from integrations.odoo.errors import OdooPermanentError


class Command(BaseCommand):
    help = "Mark every stocked pair dirty and push them all to Odoo now (in this process), with a progress bar."

    def add_arguments(self, parser):
        parser.add_argument("--store", action="append", metavar="CODE", help="only this store (repeatable)")
        parser.add_argument("--dry-run", action="store_true", help="report what would be pushed, change nothing")

    def handle(self, *args, store=None, dry_run=False, **options):
        stores = Store.objects.order_by("code")
        if store:
            stores = stores.filter(code__in=store)
            unknown = set(store) - set(stores.values_list("code", flat=True))
            if unknown:
                raise CommandError(f"Unknown store(s): {', '.join(sorted(unknown))}")
        store_ids = list(stores.values_list("id", flat=True))
        counts = dict(StockLevel.objects.filter(store_id__in=store_ids).values_list("store_id").annotate(n=Count("id")))
        total = sum(counts.values())
        for s in stores:
            mapping = f"location {s.odoo_location_id}" if s.odoo_location_id else "NOT MAPPED (skipped)"
            self.stdout.write(f"{s.code:<20} {counts.get(s.id, 0):>8} pairs  {mapping}")
        if dry_run:
            self.stdout.write(f"Dry run: {total} pair(s) would be pushed; nothing changed.")
            return
        if not odoo_enabled():
            raise CommandError(services.OFF_MESSAGE)
        services.inventory_mark_dirty(store_ids=store_ids)
        with tqdm(total=total, unit="pair", desc="odoo push", file=self.stderr._out) as bar:
            try:
                result = services.inventory_push_all(store_ids=store_ids, progress=bar.update)
            except OdooPermanentError as exc:
                raise CommandError(f"Odoo refused the push: {exc}") from exc
        self.stdout.write(
            f"Pushed: {result.written} written, {result.unchanged} already equal, {result.skipped} skipped "
            f"(store not mapped), {result.failed} failed (see the failed-task inbox); {result.calls} XML-RPC calls."
        )
        if result.error:
            raise CommandError(f"Stopped on a transient error (a worker will retry the rest): {result.error}")
