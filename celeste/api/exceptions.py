from django.db.models import ProtectedError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from orders.errors import OrderConflict


def exception_handler(exc, context):
    """DRF's handler, plus domain conflicts as 409 with a readable message."""
    if isinstance(exc, OrderConflict):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, ProtectedError):
        return Response(
            {"detail": "This object is still referenced (e.g. by orders) and cannot be deleted."},
            status=status.HTTP_409_CONFLICT,
        )
    return drf_exception_handler(exc, context)
