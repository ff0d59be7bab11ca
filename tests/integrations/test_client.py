"""The XML-RPC client against a real protocol server: uid caching, timeouts,
and how each failure is classified."""

import xmlrpc.client

import pytest

from celeste.devserver.loopback import free_port
from integrations.odoo.client import OdooClient, OdooConfig, classify_fault
from integrations.odoo.errors import OdooPermanentError, OdooTransientError


def client_for(server, **overrides) -> OdooClient:
    config = dict(url=server.url, db=server.db, user=server.user, api_key=server.api_key, timeout=2, call_retries=0)
    return OdooClient(OdooConfig(**{**config, **overrides}))


def test_authenticates_once_and_caches_the_uid(odoo):
    client = client_for(odoo)

    client.search("res.partner", [])
    client.search("res.partner", [])

    assert odoo.calls[("common", "authenticate")] == 1
    assert odoo.calls[("res.partner", "search")] == 2


def test_refused_credentials_are_permanent(odoo):
    with pytest.raises(OdooPermanentError) as raised:
        client_for(odoo, api_key="wrong").search("res.partner", [])
    assert raised.value.auth


def test_access_denied_fault_is_permanent_and_forgets_the_uid(odoo):
    client = client_for(odoo)
    client.search("res.partner", [])
    odoo.deny_access()

    with pytest.raises(OdooPermanentError, match="Access Denied") as raised:
        client.search("res.partner", [])

    assert raised.value.auth
    assert client._uid is None


def test_user_error_is_permanent(odoo):
    # Writing a quant outside inventory mode: Odoo's UserError (fault code 2).
    product_id = odoo.state.add_product("SKU-X")
    location_id = odoo.state.add_location("shop")
    with pytest.raises(OdooPermanentError, match="Quant's editing is restricted") as raised:
        client_for(odoo).create(
            "stock.quant", {"product_id": product_id, "location_id": location_id, "inventory_quantity": 3}
        )
    assert not raised.value.auth


def test_http_503_is_transient(odoo):
    client = client_for(odoo)
    client.search("res.partner", [])
    odoo.fail_next(1, "503")

    with pytest.raises(OdooTransientError, match="503"):
        client.search("res.partner", [])
    assert client.search("res.partner", []) == []  # the connection recovers


def test_concurrency_fault_is_transient(odoo):
    odoo.fail_next(1, "concurrency", model="res.partner")
    with pytest.raises(OdooTransientError, match="could not serialize access"):
        client_for(odoo).search("res.partner", [])


def test_idempotent_calls_are_retried_in_call_but_create_is_not(odoo):
    client = client_for(odoo, call_retries=2)
    client.search("res.partner", [])
    odoo.fail_next(2, "503")
    assert client.search("res.partner", []) == []

    odoo.fail_next(1, "503", model="res.partner", method="create", after=True)
    with pytest.raises(OdooTransientError):
        client.create("res.partner", {"name": "Ada"})
    assert odoo.calls[("res.partner", "create")] == 1  # one try: a retry could duplicate the partner


def test_read_timeout_is_transient(odoo):
    odoo.injection.latency = 1.5
    with pytest.raises(OdooTransientError, match="timed out"):
        client_for(odoo, timeout=0.5).search("res.partner", [])


def test_connection_refused_is_transient():
    port = free_port()  # nobody listens on it
    client = OdooClient(
        OdooConfig(url=f"http://127.0.0.1:{port}", db="x", user="u", api_key="k", timeout=1, call_retries=0)
    )
    with pytest.raises(OdooTransientError, match="unreachable"):
        client.search("res.partner", [])


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (xmlrpc.client.Fault(4, "You are not allowed to access 'Quants' (stock.quant) records."), OdooPermanentError),
        (xmlrpc.client.Fault(1, "Traceback...\nodoo.exceptions.ValidationError: bad value"), OdooPermanentError),
        (xmlrpc.client.Fault(1, "odoo.exceptions.MissingError: Record does not exist"), OdooPermanentError),
        (
            xmlrpc.client.Fault(1, "Traceback...\npsycopg2.errors.LockNotAvailable: could not obtain lock"),
            OdooTransientError,
        ),
        (xmlrpc.client.Fault(1, "Traceback...\nKeyError: 'x'"), OdooTransientError),
    ],
)
def test_fault_shapes_of_older_servers_are_classified(fault, expected):
    assert isinstance(classify_fault(fault), expected)
