from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from celeste.background.models import OutboxMessage
from celeste.background.queue import outbox_relay


class Command(BaseCommand):
    help = (
        "Drain the outbox now: publish every pending message to the broker and republish the jobs of dead "
        "workers (what the relay does every few seconds)."
    )

    def handle(self, *args, **options):
        waiting = OutboxMessage.objects.filter(published_at__isnull=True).count()
        published = 0
        with tqdm(total=waiting, unit="message", disable=waiting == 0, file=self.stderr) as bar:
            while published < waiting:
                batch = outbox_relay(limit=500, min_age_seconds=0)
                if batch == 0:
                    break
                published += batch
                bar.update(batch)
        left = OutboxMessage.objects.filter(published_at__isnull=True).count()
        if left and published < waiting:
            raise CommandError(f"Published {published}; {left} still waiting (is the broker reachable?).")
        self.stdout.write(self.style.SUCCESS(f"Published {published} message(s)."))
