"""The OpenAPI schema (/api/schema/) matches what the API answers: Schemathesis generates
requests for every operation from the schema, schema-valid ones and schema-invalid ones,
sends them to the Django app in this process (WSGI) as a staff user and as a customer
(token auth), and checks each answer: no 5xx, the status is documented, the content type
is documented, the body conforms to the documented schema.

Bounded so the suite stays fast: a few examples per operation and mode, a deadline per
example, no shrinking (a failure is reported as found, with the request to reproduce
it). Each request runs in a savepoint rolled back after it, so the seeded data stays as
it is, and one request's database error cannot leak into the next."""

from datetime import timedelta

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from catalog.embeddings import query_vector

from ..factories import StockLevelFactory, UserFactory, place_order

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 6  # per operation and mode: 2 roles × 2 modes × ~50 operations
BOUNDS = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=5),
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,  # no .hypothesis/ directory in the work tree
)


@pytest.fixture
def wsgi_app(db, settings):
    """The project's WSGI app, called in this thread inside the test's transaction."""
    settings.VAPID_PUBLIC_KEY = "BPublicKeyForTheSchemaTest"  # else vapid-public-key answers its documented 503
    query_vector("warm up")  # the model loads once, outside every example's deadline
    # As Django's test client does: a request's end must not close the test's connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def token_for(user) -> str:
    place_order(user=user)  # an order, an address, a store, products and stock to find
    StockLevelFactory()
    return Token.objects.create(user=user).key


def check_every_operation(app, token: str) -> list[str]:
    schema = schemathesis.openapi.from_wsgi("/api/schema/", app)
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += [f"{operation.label}\n{failure}" for failure in check(operation, mode, token)[:2]]
    return failures


def check(operation, mode: GenerationMode, token: str) -> list[str]:
    found = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @BOUNDS
    def send(case):
        sid = transaction.savepoint()
        try:
            response = case.call(headers={"Authorization": f"Token {token}"})
        finally:
            transaction.savepoint_rollback(sid)
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseExceptionGroup as exc:  # schemathesis' FailureGroup
            found.append(f"{mode.value}: {exc}")

    try:
        send()
    except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
        assert mode is GenerationMode.NEGATIVE, operation.label
    return found


def test_the_api_answers_a_staff_user_as_its_schema_says(wsgi_app):
    failures = check_every_operation(wsgi_app, token_for(UserFactory(is_staff=True)))

    assert not failures, "\n\n".join(failures)


def test_the_api_answers_a_customer_as_its_schema_says(wsgi_app):
    failures = check_every_operation(wsgi_app, token_for(UserFactory()))

    assert not failures, "\n\n".join(failures)
