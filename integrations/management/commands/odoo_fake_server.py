"""Run the Odoo-compatible test server for local demos (not for production)."""

from django.core.management.base import BaseCommand

from catalog.models import Product, Store
from catalog.services import store_update
from integrations.odoo.testing.server import FakeOdooServer


class Command(BaseCommand):
    help = (
        "Serve a fake Odoo (XML-RPC, in memory) seeded with the catalog's SKUs and one location per store. "
        "Point ODOO_URL/ODOO_DB/ODOO_USER/ODOO_API_KEY at it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8069, help="port to listen on (default: %(default)s)")
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
        parser.add_argument(
            "--map-stores", action="store_true", help="set each store's odoo_location_id to its fake location"
        )
        parser.add_argument("--fail-rate", type=float, default=0.0, help="fraction of calls failing (503/concurrency)")
        parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")

    def handle(self, *args, port, host, map_stores, fail_rate, latency, **options):
        server = FakeOdooServer(host=host, port=port, db="celeste", user="celeste@example.com", api_key="dev-key")
        for sku, name in Product.objects.values_list("sku", "name"):
            server.state.add_product(sku, name)
        for store in Store.objects.order_by("id"):
            location_id = server.state.add_location(store.code)
            if map_stores:
                store_update(store=store, odoo_location_id=location_id)
            self.stdout.write(f"store {store.code:<20} -> stock.location {location_id}")
        server.fail_rate(fail_rate)
        server.injection.latency = latency
        for name, value in server.env().items():
            self.stdout.write(f"{name}={value}")
        self.stdout.write("Serving; Ctrl-C to stop.")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
