"""/api/docs/ (Swagger UI) works with no internet: its files come from the project
(drf-spectacular-sidecar, served as static files), and the schema it shows is grouped
by resource, with summaries and the token scheme first."""

import re

import pytest
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db


def test_the_docs_page_references_only_local_assets_and_they_are_served(settings, tmp_path):
    # As deployed: bootstrap collects the static files, whitenoise serves them.
    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", interactive=False, verbosity=0)
    client = Client()  # a new handler: whitenoise scans STATIC_ROOT when it starts
    page = client.get("/api/docs/").content.decode()

    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    assert not re.findall(r"https?://", page), "the page would load something from the internet"
    for asset in assets:
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert b"".join(response.streaming_content if response.streaming else [response.content])


def test_the_schema_lists_the_token_scheme_first_and_groups_operations_by_resource_with_summaries():
    schema = Client().get("/api/schema/?format=json").json()
    operations = [op for path in schema["paths"].values() for op in path.values()]

    schemes = list(schema["components"]["securitySchemes"])
    assert schemes[0] == "Token"
    assert "Token <key>" in schema["components"]["securitySchemes"]["Token"]["description"]
    assert {"products", "orders", "notifications", "stores", "addresses"} <= {op["tags"][0] for op in operations}
    assert all(op.get("summary") for op in operations)
    ship = schema["paths"]["/api/v1/orders/{id}/ship/"]["post"]
    assert ship["summary"] == "Orders: ship"
    assert {"401", "403", "404", "409"} <= set(ship["responses"])


def test_the_api_root_lists_every_apps_resources_and_the_docs():
    root = Client().get("/api/v1/").json()

    for resource in ("products", "stores", "orders", "addresses", "notifications", "push/subscriptions", "auth/token"):
        assert root[resource].endswith(f"/api/v1/{resource}/"), resource
    assert "background/tasks" in root and root["docs"].endswith("/api/docs/")
    assert Client().get(root["orders"].removeprefix("http://testserver")).status_code in (401, 403)
