import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "celeste.settings.local")
application = get_wsgi_application()

from catalog.embeddings import warm_up_in_background  # noqa: E402  (needs settings)

warm_up_in_background()
