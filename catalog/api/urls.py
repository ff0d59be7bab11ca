from celeste.api.routers import Router

from .views import ProductViewSet, StockLevelViewSet, StoreViewSet

router = Router()
router.register("stores", StoreViewSet)
router.register("products", ProductViewSet)
router.register("stock-levels", StockLevelViewSet)
urlpatterns = router.urls
