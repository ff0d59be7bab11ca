from rest_framework.routers import DefaultRouter


class Router(DefaultRouter):
    """Accepts URLs with or without the trailing slash (``/products/search?q=``)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.trailing_slash = "/?"
