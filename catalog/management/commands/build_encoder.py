"""Make the ONNX encoder files (export + int8) of EMBEDDING_MODEL now, instead of on first use."""

from django.core.management.base import BaseCommand

from catalog import embeddings


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options):
        # Safe beside running processes: they wait for the same lock and then use these files.
        for backend, path in embeddings.onnx_files(embeddings.model_dir()).items():
            self.stdout.write(f"{backend}: {path}")
