"""A URL that matches no route is answered in JSON under /api/, like DRF's own 404s
(``{"detail": …}``), so API clients and the OpenAPI schema see one error format; other
paths keep Django's page. Installed as ``handler404`` in celeste/urls.py (used when
DEBUG is off). Base package: no domain imports."""

from django.http import JsonResponse
from django.views.defaults import page_not_found


def not_found(request, exception):
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)
