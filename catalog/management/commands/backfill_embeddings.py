from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from tqdm import tqdm

from catalog.models import EmbeddingStatus, Product, ProductEmbedding
from catalog.services import (
    embeddings_create_missing,
    embeddings_embed_stale,
    embeddings_mark_stale_pending,
    pending_embeddings,
    stale_embeddings,
)


class Command(BaseCommand):
    help = "Embed products in this process, with a progress bar (existing data, model upgrades)."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--stale", action="store_true", help="Only stale or missing embeddings (default).")
        which.add_argument("--all", action="store_true", help="Re-embed every active product.")
        parser.add_argument("--batch-size", type=int, default=64, help="Products per model call (default 64).")
        parser.add_argument("--dry-run", action="store_true", help="Report what would be embedded; change nothing.")

    def handle(self, *args, all=False, batch_size=64, dry_run=False, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        if dry_run:
            if all:
                todo = Product.objects.filter(active=True).count()
            else:
                missing = Product.objects.filter(active=True, embedding__isnull=True).count()
                todo = stale_embeddings().count() + missing
            self.stdout.write(f"Would embed {todo} product(s) (dry run, nothing changed).")
            return
        embeddings_create_missing()
        if all:
            with transaction.atomic():
                ProductEmbedding.objects.filter(product__active=True).update(
                    content_hash="", status=EmbeddingStatus.PENDING
                )
        else:
            embeddings_mark_stale_pending()
        todo = pending_embeddings().count()
        done = 0
        with tqdm(total=todo, unit="product", disable=todo == 0, file=self.stderr) as bar:
            while done < todo:
                embedded = embeddings_embed_stale(batch_size=batch_size)
                if embedded == 0:
                    break  # the rest is locked by workers embedding it right now
                done += embedded
                bar.update(embedded)
        self.stdout.write(self.style.SUCCESS(f"Embedded {done} product(s)."))
