from celeste.api.routers import Router

from .views import ReportViewSet

router = Router()
router.register("reports", ReportViewSet, basename="report")
urlpatterns = router.urls
