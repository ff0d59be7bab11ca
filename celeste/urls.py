from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from celeste.api.auth import token_login
from celeste.api.root import ApiRootView
from celeste.metrics import metrics_view

handler404 = "celeste.api.notfound.not_found"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/v1/", ApiRootView.as_view(), name="api-root"),
    path("api/v1/auth/token/", token_login, name="api-token"),
    path("api/v1/", include("catalog.api.urls")),
    path("api/v1/", include("orders.api.urls")),
    path("api/v1/", include("notifications.api.urls")),
    path("api/v1/", include("reports.api.urls")),
    path("api/v1/", include("celeste.background.api.urls")),
]


def media(request, path):
    # MEDIA_ROOT read per request: tests point it at a directory of their own.
    return serve(request, path, document_root=settings.MEDIA_ROOT)


if settings.MEDIA_SERVE and not settings.AWS_STORAGE_BUCKET_NAME:
    # Local media (product images) from the filesystem storage; production serves them from S3 + CDN.
    urlpatterns.append(re_path(rf"^{settings.MEDIA_URL.strip('/')}/(?P<path>.*)$", media, name="media"))
