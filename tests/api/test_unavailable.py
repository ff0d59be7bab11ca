"""While the database is unreachable the web answers 503 with Retry-After, never 500;
other database errors surface as before."""

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, ProgrammingError, connection
from django.test import Client
from django.urls import path
from rest_framework.decorators import api_view

from ..conftest import postgres_down, published
from ..factories import ProductFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)
UNAVAILABLE = {"detail": "The service is temporarily unavailable; retry shortly."}


def test_api_answers_503_with_retry_after_while_postgres_is_down_and_200_once_it_is_back(
    api_client, redis, embedded_root, settings
):
    settings.SERVICE_UNAVAILABLE_RETRY_AFTER_SECONDS = 7
    ProductFactory()
    published()

    with postgres_down(embedded_root):
        response = api_client.get("/api/v1/products/")

        assert response.status_code == 503
        assert response["Retry-After"] == "7"
        assert response.json() == UNAVAILABLE

    response = api_client.get("/api/v1/products/")
    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_a_django_view_answers_503_while_postgres_is_down(embedded_root):
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    with postgres_down(embedded_root):
        response = client.get("/admin/")  # loads the session and the user: both from Postgres

        assert response.status_code == 503
        assert response["Retry-After"] == "5"
        assert response.json() == UNAVAILABLE

    assert client.get("/admin/").status_code == 200


# --- other database errors are bugs: they stay 500s -----------------------------------


def _duplicate_user():
    get_user_model().objects.create(username="taken")
    get_user_model().objects.create(username="taken")


def _missing_table():
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")


urlpatterns = [
    path("api/duplicate/", api_view(["GET"])(lambda request: _duplicate_user())),
    path("api/missing-table/", api_view(["GET"])(lambda request: _missing_table())),
    path("duplicate/", lambda request: _duplicate_user()),
]


@pytest.mark.urls(__name__)
@pytest.mark.parametrize(
    "url, error",
    [("/api/duplicate/", IntegrityError), ("/api/missing-table/", ProgrammingError), ("/duplicate/", IntegrityError)],
)
def test_other_database_errors_are_not_turned_into_503(url, error):
    with pytest.raises(error):  # the test client re-raises what reached Django's 500 handler
        Client().get(url)
