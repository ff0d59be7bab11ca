from django.core.management.base import BaseCommand

from notifications.channels import vapid_key_pair


class Command(BaseCommand):
    help = "Generate a VAPID key pair for Web Push; prints the env lines to set."

    def handle(self, *args, **options):
        private, public = vapid_key_pair()
        self.stdout.write(f"VAPID_PRIVATE_KEY={private}")
        self.stdout.write(f"VAPID_PUBLIC_KEY={public}")
