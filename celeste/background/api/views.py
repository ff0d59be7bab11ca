from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from celeste.api.permissions import IsStaff

from .. import selectors


class TaskConsoleView(APIView):
    """Staff: the task console's figures (the admin's "Background tasks" page) as JSON."""

    permission_classes = [IsStaff]

    @extend_schema(
        parameters=[OpenApiParameter("hours", int, description=f"Window, 1–{selectors.MAX_HOURS} (default 24).")],
        responses={200: dict},
    )
    def get(self, request):
        window = serializers.IntegerField(min_value=1, max_value=selectors.MAX_HOURS, default=24)
        try:
            hours = window.run_validation(request.query_params.get("hours", 24))
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"hours": exc.detail}) from None
        return Response(selectors.task_console(hours=hours))
