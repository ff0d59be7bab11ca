from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.images import image_process, images_needing_work


class Command(BaseCommand):
    help = "Make product image variants in this process, with a progress bar (backfill, new sizes or formats)."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument(
            "--missing", action="store_true", help="Images not ready or missing a current variant (default)."
        )
        which.add_argument("--all", action="store_true", help="Every image, made again.")
        names = ", ".join(settings.IMAGE_VARIANTS)
        parser.add_argument("--variant", metavar="NAME", help=f"Only this variant ({names}).")
        parser.add_argument("--dry-run", action="store_true", help="Report what would be processed; change nothing.")

    def handle(self, *args, all=False, variant=None, dry_run=False, **options):
        if variant is not None and variant not in settings.IMAGE_VARIANTS:
            raise CommandError(f"Unknown variant {variant!r}; IMAGE_VARIANTS has {', '.join(settings.IMAGE_VARIANTS)}.")
        names = [variant] if variant else None
        todo = images_needing_work(all_images=all, names=names)
        if dry_run:
            self.stdout.write(f"Would process {len(todo)} image(s) (dry run, nothing changed).")
            return
        outcomes: dict[str, int] = {}
        with tqdm(total=len(todo), unit="image", disable=not todo, file=self.stderr) as bar:
            for image in todo:
                try:
                    outcome = image_process(image_id=image.id, names=names, force=True)
                except Exception as exc:  # an unreachable URL: reported, the backfill goes on
                    outcome = "error"
                    self.stderr.write(f"image {image.id}: {exc}")
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                bar.update(1)
        summary = ", ".join(f"{outcome}: {count}" for outcome, count in sorted(outcomes.items())) or "nothing to do"
        self.stdout.write(self.style.SUCCESS(f"Processed {len(todo)} image(s) ({summary})."))
