"""Product images: upload p50 with background vs inline processing; pipeline throughput vs a plain Pillow loop.

Upload: ``POST /api/v1/products/{id}/images`` (multipart, in-process APIClient, staff) of
distinct photo-like JPEGs (2000x1500, about 0.5 MB each), with the
``catalog.process_product_image`` switch ``background`` (the request stores the original
and enqueues) and ``sync`` (the variants are made inside the request, after commit),
alternating blocks so drift hits both alike.

Pipeline: a real Celery worker (queue images, concurrency 1) while this process uploads N
images through ``product_image_upload``; timed from the first upload until every image is
``ready``. Reference: a plain Pillow loop in this process making the same variants (open,
EXIF transpose, RGB, thumbnail to each size, encode each format at the same quality) from
the same N originals, with no storage or database. Both use one core's worth of processes;
the bench process and the worker share the machine's 2 cores.
"""

import io
import random
import shutil
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from PIL import Image, ImageOps, features
from rest_framework.test import APIClient

from bench import BASE_DIR, Result, cached_switches, p50, report, reset_catalog, set_switch, wait_until
from catalog import images, services, tasks
from catalog.models import ImageStatus, ProductImage
from celeste.devserver.processes import celery_worker

ENCODER = {"avif": "AVIF", "webp": "WEBP", "jpeg": "JPEG"}


def photo(seed: int, size=(2000, 1500)) -> bytes:
    """A distinct, photo-like JPEG: smooth random colour fields (a tiny random image scaled up)
    with a little grain, so encoders meet realistic content, not flat colour or pure noise."""
    rng = random.Random(seed)
    small = Image.new("RGB", (24, 18))
    small.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(24 * 18)])
    image = small.resize(size, Image.Resampling.BICUBIC)
    grain = Image.effect_noise(size, 12).convert("RGB")
    image = Image.blend(image, grain, 0.08)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def plain_pillow(originals: list[bytes]) -> float:
    """Images/s of the reference loop: the same variants, Pillow only, one process."""
    formats = {fmt: q for fmt, q in settings.IMAGE_FORMATS.items() if features.check("jpg" if fmt == "jpeg" else fmt)}
    sizes = sorted(settings.IMAGE_VARIANTS.values(), reverse=True)
    start = time.perf_counter()
    for content in originals:
        with Image.open(io.BytesIO(content)) as original:
            image = ImageOps.exif_transpose(original).convert("RGB")
        for px in sizes:
            image = image.copy()
            image.thumbnail((px, px), Image.Resampling.LANCZOS)
            for fmt, quality in formats.items():
                image.save(io.BytesIO(), ENCODER[fmt], quality=quality)
    return len(originals) / (time.perf_counter() - start)


def upload_p50(client: APIClient, product_ids: list[int], originals: list[bytes]) -> list[float]:
    samples = []
    for product_id, content in zip(product_ids, originals, strict=True):
        upload = io.BytesIO(content)
        upload.name = "photo.jpg"
        start = time.perf_counter()
        response = client.post(f"/api/v1/products/{product_id}/images", {"file": upload}, format="multipart")
        samples.append(time.perf_counter() - start)
        assert response.status_code == 202, response.content
    return samples


def fresh_media() -> None:
    shutil.rmtree(settings.MEDIA_ROOT, ignore_errors=True)


def run(quick: bool) -> list[Result]:
    per_block, blocks = (3, 2) if quick else (5, 3)
    burst = 10 if quick else 30
    reset_catalog()
    fresh_media()
    staff, _ = get_user_model().objects.get_or_create(username="bench-images", defaults={"is_staff": True})
    client = APIClient()
    client.force_authenticate(staff)
    product_ids = [
        services.product_create(sku=f"IMG-{i:04d}", name=f"Pictured {i}", price="1.00").id
        for i in range(per_block * blocks * 2 + 1)
    ]
    seeds = iter(range(1_000_000))
    upload_p50(client, product_ids[-1:], [photo(next(seeds))])  # warm-up: imports, first connection

    timed = {"background": [], "sync": []}
    with cached_switches():
        ids = iter(product_ids)
        for _ in range(blocks):
            for mode in ("background", "sync"):
                set_switch(tasks.process_product_image.name, mode)
                originals = [photo(next(seeds)) for _ in range(per_block)]
                timed[mode] += upload_p50(client, [next(ids) for _ in originals], originals)
    inline_ready = ProductImage.objects.filter(status=ImageStatus.READY).count()
    assert inline_ready == per_block * blocks, f"{inline_ready} images made inline, expected {per_block * blocks}"

    reset_catalog()
    fresh_media()
    set_switch(tasks.process_product_image.name, "background")
    originals = [photo(next(seeds)) for _ in range(burst)]
    raw_before = plain_pillow(originals)
    products = [services.product_create(sku=f"BURST-{i:04d}", name=f"B {i}", price="1.00") for i in range(burst)]
    with (
        cached_switches(),
        celery_worker(
            queues="images", concurrency=1, env={"LOG_LEVEL": "INFO"}, log_dir=BASE_DIR / "var" / "bench" / "logs"
        ) as worker,
    ):
        warm = images.product_image_upload(product=products[0], content=photo(next(seeds)))[0]
        wait_until(lambda: ProductImage.objects.get(id=warm.id).status == ImageStatus.READY, 120, worker, "warm-up")
        start = time.monotonic()
        pairs = zip(products, originals, strict=True)
        ids = [images.product_image_upload(product=p, content=c)[0].id for p, c in pairs]
        uploaded = time.monotonic()
        done = wait_until(
            lambda: ProductImage.objects.filter(id__in=ids, status=ImageStatus.READY).count() == burst,
            600,
            worker,
            "pipeline",
        )
    failed = ProductImage.objects.filter(id__in=ids).exclude(status=ImageStatus.READY).count()
    pipeline_rate = burst / (done - start)
    raw_rate = max(raw_before, plain_pillow(originals))
    reset_catalog()
    fresh_media()

    b = "images"
    background, inline = p50(timed["background"]), p50(timed["sync"])
    return report(
        [
            Result(b, "upload p50, processing in the background", background * 1000, "ms"),
            Result(b, "upload p50, processing inline (switch sync)", inline * 1000, "ms"),
            Result(b, "upload p50 background / inline", background / inline, "x", "<= 0.2"),
            Result(b, f"pipeline: {burst} uploads took", uploaded - start, "s"),
            Result(b, f"pipeline: {burst} uploads -> all variants ready (real worker)", done - start, "s"),
            Result(b, "pipeline throughput", pipeline_rate, "images/s"),
            Result(b, "plain Pillow loop, same variants, one process (best of 2)", raw_rate, "images/s"),
            Result(b, "pipeline / plain Pillow throughput", pipeline_rate / raw_rate, "x", ">= 0.7"),
            Result(b, "pipeline images not ready (must be 0)", failed, "images"),
        ]
    )
