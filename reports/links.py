"""Download links. A link is signed for one user and one report and expires
(REPORT_LINK_MAX_AGE_SECONDS); the view that serves it checks that the signed-in
user is that user and may still see the report. Where the storage signs its own
URLs (S3), the view then redirects to a short-lived pre-signed URL instead of
streaming the file through the web process."""

from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage
from django.urls import reverse

SALT = "reports.download"


class LinkRefused(Exception):
    """The link is not valid for this user and report; ``status`` is what to answer."""

    def __init__(self, message: str, *, status: int):
        super().__init__(message)
        self.status = status


def download_token(*, report_id: int, user_id: int) -> str:
    return signing.dumps({"r": report_id, "u": user_id}, salt=SALT, compress=False)


def download_url(*, report_id: int, user_id: int) -> str:
    path = reverse("report-download", kwargs={"pk": report_id})
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}{path}?token={download_token(report_id=report_id, user_id=user_id)}"


def token_check(token: str, *, report, user) -> None:
    """Raises LinkRefused unless ``token`` was signed for ``user`` and this report,
    recently enough, and the user is staff or the report's requester."""
    try:
        signed = signing.loads(token or "", salt=SALT, max_age=settings.REPORT_LINK_MAX_AGE_SECONDS)
    except signing.SignatureExpired:
        raise LinkRefused("This download link has expired; ask for a new one.", status=403) from None
    except signing.BadSignature:
        raise LinkRefused("Not a valid download link.", status=404) from None
    if signed.get("r") != report.id:
        raise LinkRefused("Not a valid download link.", status=404)
    if signed.get("u") != user.id:
        raise LinkRefused("This download link belongs to someone else.", status=403)
    if not (user.is_staff or user.id == report.requested_by_id):
        raise LinkRefused("Only staff and the report's requester may download it.", status=403)


def presigned_url(name: str, *, filename: str) -> str | None:
    """A URL the storage signs itself, valid for REPORT_PRESIGNED_URL_SECONDS, or None
    when it cannot (the filesystem storage): then the view streams the file.
    django-storages' S3 storage signs its URLs when ``querystring_auth`` is on."""
    if not getattr(default_storage, "querystring_auth", False):
        return None
    return default_storage.url(
        name,
        parameters={"ResponseContentDisposition": f'attachment; filename="{filename}"'},
        expire=settings.REPORT_PRESIGNED_URL_SECONDS,
    )
