from rest_framework.routers import DefaultRouter

from .views import ProductViewSet, StockLevelViewSet, StoreViewSet

router = DefaultRouter(trailing_slash="/?")
router.register("stores", StoreViewSet)
router.register("products", ProductViewSet)
router.register("stock-levels", StockLevelViewSet)
urlpatterns = router.urls
