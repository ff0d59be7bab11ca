"""Fixtures for the Odoo integration: a fake Odoo on loopback, settings pointing
at it (this process and worker subprocesses), and a catalog mapped to it."""

import pytest

from catalog.services import store_update
from integrations.odoo.services import PUSH_DEFERRED_KEY, PUSH_SCHEDULED_KEY

from ..factories import ProductFactory, StoreFactory

EMBED_TASK = "catalog.embed_products"


@pytest.fixture
def odoo_settings(odoo_configured):
    """Point this process at the fake server (no in-call retries unless a test asks)."""
    settings = odoo_configured
    settings.ODOO_TIMEOUT_SECONDS = 5
    settings.ODOO_CALL_RETRIES = 0
    settings.ODOO_INVENTORY_BATCH_SIZE = 100
    return settings


@pytest.fixture(autouse=True)
def _no_embeddings(db, set_switch):
    # Factories create products; their embeddings are another story (and a model load in the worker).
    set_switch(EMBED_TASK, "off")


@pytest.fixture(autouse=True)
def _no_push_flag(redis):
    redis.delete(f"celeste:1:{PUSH_SCHEDULED_KEY}", f"celeste:1:{PUSH_DEFERRED_KEY}")


@pytest.fixture
def odoo_worker(start_worker, odoo, odoo_settings):
    """A real worker configured for the fake server: short retries, 5 attempts, a
    1 s debounce (the tests that are about the debounce set their own)."""

    def start(**env):
        return start_worker(
            **{
                **odoo.env(),
                "ODOO_SYNC_MAX_ATTEMPTS": "5",
                "ODOO_CALL_RETRIES": "0",
                "ODOO_TIMEOUT_SECONDS": "5",
                "ODOO_INVENTORY_DEBOUNCE_SECONDS": "1",
                **env,
            }
        )

    return start


@pytest.fixture
def mapped_store(odoo):
    store = StoreFactory()
    return store_update(store=store, odoo_location_id=odoo.state.add_location(store.code))


@pytest.fixture
def odoo_product(odoo):
    """A Celeste product that also exists in Odoo (same SKU = default_code)."""

    def make(**kwargs):
        product = ProductFactory(**kwargs)
        odoo.state.add_product(product.sku, product.name)
        return product

    return make
