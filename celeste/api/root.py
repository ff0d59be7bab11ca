"""The API root (``/api/v1/``): every resource of every app, found in the URLconf, so
an app's new endpoint is listed without anyone editing this (the routers' own root
views would list one app each)."""

from django.urls import NoReverseMatch, URLResolver, get_resolver, reverse
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

PREFIX = "api/v1/"


def api_endpoints() -> list[str]:
    """Paths (after /api/v1/) of every named endpoint that takes no argument."""
    patterns = []
    for top in get_resolver().url_patterns:
        if isinstance(top, URLResolver) and str(top.pattern) == PREFIX:
            patterns.extend(top.url_patterns)  # an app's urls
        elif str(top.pattern).startswith(PREFIX):
            patterns.append(top)  # e.g. auth/token
    paths = set()
    for pattern in patterns:
        name = getattr(pattern, "name", None)
        if not name or name == "api-root":
            continue
        try:
            url = reverse(name)
        except NoReverseMatch:  # a detail route (needs an id)
            continue
        paths.add(url.split(PREFIX, 1)[1].rstrip("/"))
    return sorted(paths)


class ApiRootView(APIView):
    """Every endpoint of the API; the documentation is at /api/docs/."""

    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(exclude=True)
    def get(self, request, format=None):
        links = {path: request.build_absolute_uri(f"/{PREFIX}{path}/") for path in api_endpoints()}
        docs = {
            "docs": request.build_absolute_uri(reverse("swagger-ui")),
            "schema": request.build_absolute_uri(reverse("schema")),
        }
        return Response({**links, **docs})
