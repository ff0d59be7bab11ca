from django.http import FileResponse, HttpResponseRedirect
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response

from celeste.api.errors import Conflict
from celeste.api.permissions import IsStaff
from celeste.api.schema import ErrorDetailSerializer

from .. import kinds, links, services
from ..models import Report, ReportStatus
from .serializers import ReportRequestSerializer, ReportSerializer


class ReportNotReady(Conflict):
    pass


class ReportViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Reports (staff only): request one, follow its progress, download it when ready."""

    queryset = Report.objects.select_related("requested_by")
    serializer_class = ReportSerializer
    permission_classes = [IsStaff]
    filter_backends = []

    @extend_schema(request=ReportRequestSerializer, responses={202: ReportSerializer})
    def create(self, request):
        given = ReportRequestSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = dict(given.validated_data)
        try:
            report = services.report_request(
                user=request.user, kind=data.pop("kind"), format=data.pop("format"), filters=data
            )
        except kinds.ReportInvalid as exc:
            raise ValidationError(exc.errors) from None
        return Response(self.get_serializer(report).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[OpenApiParameter("token", str, required=True, description="From download_url.")],
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            302: OpenApiResponse(description="To a short-lived pre-signed storage URL (S3)."),
            409: OpenApiResponse(ErrorDetailSerializer, description="The report is not ready (yet)."),
        },
    )
    @action(detail=True, methods=["get"], permission_classes=[permissions.IsAuthenticated])
    def download(self, request, pk=None):
        """The file, for the user the link was signed for (staff, or the report's requester)."""
        report = self.get_object()  # 404 for an unknown or malformed id
        try:
            links.token_check(request.query_params.get("token", ""), report=report, user=request.user)
        except links.LinkRefused as exc:
            raise (NotFound if exc.status == 404 else PermissionDenied)(str(exc)) from None
        if report.status != ReportStatus.READY:
            raise ReportNotReady(f"The report is {report.status}, not ready.")
        presigned = links.presigned_url(report.file_name, filename=report.download_filename)
        if presigned:
            return HttpResponseRedirect(presigned)
        return FileResponse(services.report_file_open(report), as_attachment=True, filename=report.download_filename)
