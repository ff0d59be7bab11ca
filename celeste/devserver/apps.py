from django.apps import AppConfig


class DevserverConfig(AppConfig):
    name = "celeste.devserver"
    label = "devserver"
    verbose_name = "Local development server"
