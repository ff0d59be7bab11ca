import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from celeste.background.schedules import ensure_periodic_tasks, ensure_task_switches


class Command(BaseCommand):
    help = (
        "Idempotent setup, in every environment: migrate, collect static files, create the periodic tasks "
        "and task switches, and an admin user."
    )

    def handle(self, *args, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        ensure_periodic_tasks()
        ensure_task_switches()
        self._ensure_admin()

    def _ensure_admin(self):
        User = get_user_model()
        saved = settings.ADMIN_CREDENTIALS_FILE
        if User.objects.filter(is_superuser=True).exists():
            # The password was printed once, when it was made; later starts only say where it is.
            if saved and saved.exists():
                self.stdout.write(f"Admin login: see {saved}")
            return
        username = os.environ.get("CELESTE_ADMIN_USERNAME", "admin")
        email = os.environ.get("CELESTE_ADMIN_EMAIL", "admin@example.com")
        password = os.environ.get("CELESTE_ADMIN_PASSWORD")
        if password:
            User.objects.create_superuser(username=username, email=email, password=password)
            self.stdout.write(
                self.style.SUCCESS(f"Created admin user {username!r} (password from CELESTE_ADMIN_PASSWORD).")
            )
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email=email, password=password)
        if saved:
            saved.write_text(f"{username} / {password}\n")
            saved.chmod(0o600)
        self.stdout.write(self.style.SUCCESS(f"Created admin user: {username} / {password}"))
