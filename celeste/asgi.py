"""The ASGI application, served by ``python -m celeste.asgi_server`` (the live event stream)."""

import os

import django
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "celeste.settings.local")
django.setup(set_prefix=False)


class LongRequestASGIHandler(ASGIHandler):
    """Django's handler without a thread per request.

    Django runs each request's synchronous parts (sync middleware, signal receivers)
    in a thread of the request's own, kept until the response ends: for a stream
    that is one idle thread per open connection, for hours. Here they share the
    one thread Django uses outside a request context. Fine for this process, which
    serves the stream (whose own database reads run in the loop's thread pool,
    notifications/live.py); the synchronous API stays on gunicorn."""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)


application = LongRequestASGIHandler()
