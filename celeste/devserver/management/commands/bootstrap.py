import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from catalog.models import Store
from celeste.background.schedules import ensure_periodic_tasks, ensure_task_switches
from celeste.devserver.embedded import var_dir


class Command(BaseCommand):
    help = "Idempotent setup: migrate, admin user, periodic tasks, demo catalog on first run."

    def add_arguments(self, parser):
        parser.add_argument("--no-demo", action="store_true", help="Do not load the demo catalog.")

    def handle(self, *args, no_demo=False, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        ensure_periodic_tasks()
        ensure_task_switches()
        self._ensure_admin()
        if not no_demo and not Store.objects.exists():
            call_command("load_demo_catalog")

    def _ensure_admin(self):
        User = get_user_model()
        embedded_mode = not os.environ.get("DATABASE_URL")
        saved = var_dir() / "admin-credentials.txt" if embedded_mode else None
        if User.objects.filter(is_superuser=True).exists():
            if saved and saved.exists():
                self.stdout.write(f"Admin login: {saved.read_text().strip()}  (from {saved})")
            return
        username = os.environ.get("CELESTE_ADMIN_USERNAME", "admin")
        email = os.environ.get("CELESTE_ADMIN_EMAIL", "admin@example.com")
        password = os.environ.get("CELESTE_ADMIN_PASSWORD")
        if password:
            User.objects.create_superuser(username=username, email=email, password=password)
            self.stdout.write(self.style.SUCCESS(f"Created admin user {username!r} (password from CELESTE_ADMIN_PASSWORD)."))
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email=email, password=password)
        if saved:
            saved.write_text(f"{username} / {password}\n")
            saved.chmod(0o600)
        self.stdout.write(self.style.SUCCESS(f"Created admin user: {username} / {password}"))
