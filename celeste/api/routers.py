from rest_framework.routers import DefaultRouter


class Router(DefaultRouter):
    """Accepts URLs with or without the trailing slash (``/products/search?q=``). No
    root view of its own: celeste/api/root.py lists every app's resources."""

    include_root_view = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.trailing_slash = "/?"
