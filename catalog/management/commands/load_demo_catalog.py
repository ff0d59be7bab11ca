import json
from decimal import Decimal
from pathlib import Path

from django.core.management.base import BaseCommand
from django.db import transaction

from catalog import services
from catalog.models import Product, Store

DEMO_FILE = Path(__file__).resolve().parents[2] / "demo_data.json"


class Command(BaseCommand):
    help = "Load the demo catalog (4 stores, 267 products, stock). Existing stores/SKUs are left as they are."

    def add_arguments(self, parser):
        parser.add_argument("--if-empty", action="store_true", help="Do nothing if any store exists (first run only).")

    def handle(self, *args, if_empty=False, **options):
        if if_empty and Store.objects.exists():
            return
        data = json.loads(DEMO_FILE.read_text())
        with transaction.atomic():
            stores = {s.code: s for s in Store.objects.filter(code__in=[s["code"] for s in data["stores"]])}
            for spec in data["stores"]:
                if spec["code"] not in stores:
                    stores[spec["code"]] = services.store_create(**spec)
            existing = set(Product.objects.values_list("sku", flat=True))
            products = {p.sku: p for p in Product.objects.filter(sku__in=[p["sku"] for p in data["products"]])}
            created = 0
            for spec in data["products"]:
                if spec["sku"] in existing:
                    continue
                products[spec["sku"]] = services.product_create(**{**spec, "price": Decimal(spec["price"])})
                created += 1
            for code, quantities in data["stock"].items():
                for sku, quantity in quantities.items():
                    services.stock_level_set(product=products[sku], store=stores[code], quantity=quantity)
        self.stdout.write(self.style.SUCCESS(f"Demo catalog: {created} product(s) created, {len(stores)} store(s)."))
