"""Compare Odoo's on-hand quantities with Celeste's stock, store by store."""

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.models import Store
from integrations.odoo import services
from integrations.odoo.client import odoo_enabled
from integrations.odoo.errors import OdooError


class Command(BaseCommand):
    help = "Report every (product, store) whose Odoo quantity differs from Celeste's; --fix pushes Celeste's."

    def add_arguments(self, parser):
        parser.add_argument("--store", action="append", metavar="CODE", help="only this store (repeatable)")
        parser.add_argument("--fix", action="store_true", help="push Celeste's quantity for every difference")

    def handle(self, *args, store=None, fix=False, **options):
        if not odoo_enabled():
            raise CommandError(services.OFF_MESSAGE)
        stores = Store.objects.filter(odoo_location_id__isnull=False)
        if store:
            stores = stores.filter(code__in=store)
            if not stores.exists():
                raise CommandError(f"No mapped store among: {', '.join(store)}")
        store_ids = list(stores.values_list("id", flat=True))
        try:
            with tqdm(total=len(store_ids), unit="store", desc="odoo reconcile", file=self.stderr._out) as bar:
                drifts = services.inventory_reconcile(store_ids=store_ids, progress=bar.update)
        except OdooError as exc:
            raise CommandError(f"Could not read Odoo: {exc}") from exc
        for drift in drifts:
            self.stdout.write(drift.line())
        self.stdout.write(f"{len(drifts)} difference(s) in {len(store_ids)} store(s).")
        if not fix or not drifts:
            return
        fixable = [(d.product_id, d.store_id) for d in drifts if d.product_id is not None]
        orphans = len(drifts) - len(fixable)
        services.inventory_mark_dirty(pairs=fixable)
        result = services.inventory_push_all()
        self.stdout.write(
            f"Fixed: {result.written} written, {result.unchanged} already equal, {result.failed} failed"
            + (f"; {orphans} pair(s) not stocked in Celeste (left alone)" if orphans else "")
            + "."
        )
        if result.error:
            raise CommandError(f"Stopped on a transient error: {result.error}")
