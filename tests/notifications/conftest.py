import pytest

from celeste.devserver.loopback import PushReceiver, SMTPServer
from notifications.channels import vapid_key_pair

from ..conftest import WORKER_ENV


@pytest.fixture
def smtp_server():
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture
def vapid_keys():
    return vapid_key_pair()


@pytest.fixture
def push_receiver(vapid_keys):
    receiver = PushReceiver(vapid_public_key=vapid_keys[1]).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def channels_env(settings, smtp_server, vapid_keys):
    """Point this process and worker subprocesses at the loopback SMTP server and VAPID keys."""
    env = {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp_server.port),
        "VAPID_PRIVATE_KEY": vapid_keys[0],
        "VAPID_PUBLIC_KEY": vapid_keys[1],
        "PUSH_TIMEOUT_SECONDS": "5",
    }
    settings.EMAIL_BACKEND = env["EMAIL_BACKEND"]
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = smtp_server.port
    settings.VAPID_PRIVATE_KEY, settings.VAPID_PUBLIC_KEY = vapid_keys
    return {**WORKER_ENV, **env}
