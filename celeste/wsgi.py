import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "celeste.settings.local")
application = get_wsgi_application()

from celeste.background.startup import web_start_run  # noqa: E402  (needs the apps loaded)

web_start_run()  # what the apps asked every web process to do once loaded (e.g. warm the embedding model)
