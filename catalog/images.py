"""Product images: ingest (upload or URL), variants made in the background, cleanup.

- The request stores the original as it came (or only the URL) and enqueues
  ``catalog.process_product_image``; it never decodes more than the header.
- The task fetches a URL through the project's egress rule (celeste/egress.py), lets
  Pillow decide what the content is, and writes every variant (IMAGE_VARIANTS ×
  IMAGE_FORMATS) under a content-addressed name: a rerun writes the same names and
  rows, and a URL never goes stale.
- A file no image refers to any more is deleted by a periodic sweep, after a grace
  period (a file written by a request that has not committed yet must survive).
"""

import hashlib
import io
import logging
import warnings
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError, features

from celeste import egress
from celeste.background.queue import enqueue

from . import tasks
from .errors import CatalogConflict
from .metrics import IMAGES_PROCESSED
from .models import ImageStatus, Product, ProductImage, ProductImageVariant

logger = logging.getLogger(__name__)

# Part of every variant's name: a change to how variants are rendered makes new names.
RENDERING_VERSION = "1"
ROOT = "images/"
# What Pillow may open: only these plugins are tried, so no other decoder (EPS through
# Ghostscript, say) ever sees user bytes; SVG is not an image Pillow decodes at all.
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "TIFF", "BMP")  # JPEG includes MPO
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "AVIF": "avif"}
ENCODERS = {"avif": "AVIF", "webp": "WEBP", "jpeg": "JPEG"}
EXTENSION_OF = {"avif": "avif", "webp": "webp", "jpeg": "jpg"}

# The pixel count is checked against IMAGE_MAX_PIXELS explicitly (a clear reason); Pillow's
# own warning below its hard limit (2 × MAX_IMAGE_PIXELS) would only repeat it.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageRejected(Exception):
    """The content (or URL) is not an image we accept; the message says why. Permanent."""


class ImageFetchFailed(Exception):
    """The URL could not be fetched now (unreachable, slow, 5xx): worth retrying."""


@dataclass(frozen=True)
class Inspected:
    format: str
    width: int
    height: int


@dataclass(frozen=True)
class Rendition:
    name: str
    format: str
    width: int
    height: int
    content: bytes


def output_formats() -> dict[str, int]:
    """IMAGE_FORMATS ({format: quality}, preferred first) that the installed Pillow can write."""
    return {fmt: q for fmt, q in settings.IMAGE_FORMATS.items() if features.check("jpg" if fmt == "jpeg" else fmt)}


def _open(data: bytes) -> Image.Image:
    Image.MAX_IMAGE_PIXELS = settings.IMAGE_MAX_PIXELS
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        raise ImageRejected(f"The image has more than {settings.IMAGE_MAX_PIXELS} pixels.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageRejected(f"Not an image we accept ({', '.join(ACCEPTED_FORMATS)}; SVG is not).") from None
    if image.width * image.height > settings.IMAGE_MAX_PIXELS:
        image.close()
        raise ImageRejected(
            f"The image has {image.width}x{image.height} pixels, more than {settings.IMAGE_MAX_PIXELS}."
        )
    return image


def image_inspect(data: bytes) -> Inspected:
    """What the content is, as Pillow reads it (header and structure, no full decode).
    Raises ImageRejected for anything else, whatever a header or extension said."""
    if len(data) > settings.IMAGE_MAX_BYTES:
        raise ImageRejected(f"The image is larger than {settings.IMAGE_MAX_BYTES} bytes.")
    image = _open(data)
    with image:
        inspected = Inspected(format=image.format, width=image.width, height=image.height)
        try:
            image.verify()
        except Exception:  # Pillow's plugins raise many types for corrupt data
            raise ImageRejected(f"The {inspected.format} data is corrupt.") from None
    return inspected


def _srgb(image: Image.Image) -> Image.Image:
    """The image in sRGB (RGB or RGBA), through its ICC profile when it has one."""
    alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    mode = "RGBA" if alpha else "RGB"
    profile = image.info.get("icc_profile")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            if image.mode not in ("RGB", "RGBA", "CMYK", "L"):
                image = image.convert(mode)
            converted = ImageCms.profileToProfile(
                image, source, ImageCms.createProfile("sRGB"), outputMode=mode if image.mode != "L" else "RGB"
            )
            if converted is not None:
                image = converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            logger.info("images.icc_profile_ignored")  # a broken profile: read the pixels as sRGB
    return image if image.mode == mode else image.convert(mode)


def render(data: bytes, *, names: list[str] | None = None) -> list[Rendition]:
    """Every variant (or those in ``names``) in every output format: the first frame,
    EXIF orientation applied, in sRGB, fitted into its size on the longest side and
    never upscaled, with no metadata (nothing of the original's info is written)."""
    sizes = {name: px for name, px in settings.IMAGE_VARIANTS.items() if names is None or name in names}
    formats = output_formats()
    with _open(data) as original:
        try:
            original.seek(0)  # animated: the first frame
            original.load()
            image = _srgb(ImageOps.exif_transpose(original))
        except Exception as exc:  # truncated or corrupt pixel data, in any plugin
            raise ImageRejected(f"The {original.format} data cannot be decoded: {exc}.") from None
    renditions = []
    # Largest first, each from the one before: cheaper than from the original each time.
    for name, px in sorted(sizes.items(), key=lambda item: -item[1]):
        image = image.copy()
        image.thumbnail((px, px), Image.Resampling.LANCZOS)
        image.info = {}
        for fmt, quality in formats.items():
            renditions.append(Rendition(name, fmt, image.width, image.height, _encode(image, fmt, quality)))
    return renditions


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    if fmt == "jpeg":
        if image.mode == "RGBA":  # JPEG has no alpha: flatten on white
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image.getchannel("A"))
            image = background
        image.save(buffer, "JPEG", quality=quality, optimize=True, progressive=True)
    elif fmt == "webp":
        image.save(buffer, "WEBP", quality=quality, method=4)
    else:
        # AVIF's encoder would take a thread per core (Pillow's default): one image renders on
        # one core, so a batch of images leaves the web the others (docs/operations.md, "Isolation").
        image.save(buffer, ENCODERS[fmt], quality=quality, max_threads=1)
    return buffer.getvalue()


# --- names ---------------------------------------------------------------------------


def original_file_name(content_hash: str, fmt: str) -> str:
    return f"{ROOT}originals/{content_hash[:2]}/{content_hash}.{EXTENSIONS.get(fmt, fmt.lower())}"


def variant_file_name(content_hash: str, name: str, fmt: str) -> str:
    """Content-addressed: the original's hash and the variant's full spec (size, format,
    quality, rendering version), so a changed setting makes new names, never new bytes
    under an old one."""
    size, quality = settings.IMAGE_VARIANTS[name], settings.IMAGE_FORMATS[fmt]
    spec = f"{content_hash}|{name}|{size}|{fmt}|{quality}|{RENDERING_VERSION}"
    digest = hashlib.sha256(spec.encode()).hexdigest()[:40]
    return f"{ROOT}variants/{digest[:2]}/{digest}-{name}.{EXTENSION_OF[fmt]}"


def expected_variants(image: ProductImage, names: list[str] | None = None) -> dict[tuple[str, str], str]:
    """{(name, format): file name} the image should have now."""
    return {
        (name, fmt): variant_file_name(image.content_hash, name, fmt)
        for name in settings.IMAGE_VARIANTS
        if names is None or name in names
        for fmt in output_formats()
    }


def image_is_complete(image: ProductImage, names: list[str] | None = None) -> bool:
    """Ready, with every expected variant under its current name (uses prefetched variants)."""
    if image.status != ImageStatus.READY or not image.content_hash:
        return False
    have = {(v.name, v.format): v.file_name for v in image.variants.all()}
    return all(have.get(key) == name for key, name in expected_variants(image, names).items())


def _store(name: str, content: bytes) -> None:
    """Write ``content`` under ``name`` unless it is there already (content-addressed: the same bytes)."""
    if default_storage.exists(name):
        return
    saved = default_storage.save(name, ContentFile(content))
    if saved != name:  # a storage that renames on conflict would break content addressing
        raise RuntimeError(f"The storage saved {name!r} as {saved!r}; it must allow overwriting.")


# --- ingest (the request) ------------------------------------------------------------


def _check_url(url: str) -> None:
    """At accept time: the scheme and, when the host resolves now, its addresses. A name
    that does not resolve yet is accepted; the task checks again before connecting."""
    try:
        egress.url_check_public(url, allow_http=True, allow_loopback=settings.IMAGE_URL_ALLOW_LOOPBACK)
    except egress.EgressLookupFailed:
        pass
    except egress.EgressRefused as exc:
        raise ImageRejected(str(exc)) from None


def _lock_product(product: Product) -> int:
    """Lock the product (its images are added one at a time); the next position."""
    Product.objects.select_for_update().filter(id=product.id).first()
    count = product.images.count()
    if count >= settings.IMAGE_MAX_PER_PRODUCT:
        raise CatalogConflict(f"Product {product.sku} has {count} images, the most allowed.")
    return (product.images.aggregate(last=Max("position"))["last"] or 0) + 1


def product_image_upload(*, product: Product, content: bytes) -> tuple[ProductImage, bool]:
    """Store an uploaded original and enqueue its processing. Returns (image, created):
    the same original already on the product is that image. Raises ImageRejected (400)."""
    inspected = image_inspect(content)
    content_hash = hashlib.sha256(content).hexdigest()
    name = original_file_name(content_hash, inspected.format)
    # Before the transaction: a file whose row never commits is swept after the grace period.
    _store(name, content)
    with transaction.atomic():
        existing = product.images.filter(content_hash=content_hash).first()
        if existing is not None:
            return existing, False
        position = _lock_product(product)
        existing = product.images.filter(content_hash=content_hash).first()  # added while we waited
        if existing is not None:
            return existing, False
        image = ProductImage.objects.create(
            product=product,
            position=position,
            original_name=name,
            content_hash=content_hash,
            size=len(content),
            width=inspected.width,
            height=inspected.height,
            format=inspected.format,
        )
        enqueue(tasks.process_product_image, image_id=image.id)
    return image, True


def product_image_add_url(*, product: Product, url: str) -> tuple[ProductImage, bool]:
    """Record an image to fetch from ``url`` and enqueue it. The same URL already on the
    product (not failed) is that image. Raises ImageRejected (400) for a refused URL."""
    _check_url(url)
    with transaction.atomic():
        position = _lock_product(product)
        existing = product.images.filter(source_url=url).exclude(status=ImageStatus.FAILED).first()
        if existing is not None:
            return existing, False
        image = ProductImage.objects.create(product=product, position=position, source_url=url)
        enqueue(tasks.process_product_image, image_id=image.id)
    return image, True


@transaction.atomic
def product_image_delete(*, image: ProductImage) -> None:
    """Delete the image and its variant rows; its files go with the orphan sweep."""
    image.delete()


@transaction.atomic
def product_images_reprocess(*, image_ids: list[int]) -> int:
    """Make these images pending again and enqueue them (admin action)."""
    images = list(ProductImage.objects.filter(id__in=image_ids))
    for image in images:
        ProductImage.objects.filter(id=image.id).update(status=ImageStatus.PENDING, error="", updated_at=timezone.now())
        enqueue(tasks.process_product_image, image_id=image.id, force=True)
    return len(images)


def product_image_reopen(*, image_id: int, **_) -> None:
    """A job retried from the inbox: its image is pending again, so the run redoes it."""
    ProductImage.objects.filter(id=image_id, status=ImageStatus.FAILED).update(
        status=ImageStatus.PENDING, error="", updated_at=timezone.now()
    )


# --- processing (the task) -----------------------------------------------------------


def _fetch(image: ProductImage) -> bytes:
    try:
        fetched = egress.fetch(
            image.source_url,
            max_bytes=settings.IMAGE_MAX_BYTES,
            timeout=settings.IMAGE_FETCH_TIMEOUT_SECONDS,
            max_redirects=settings.IMAGE_FETCH_MAX_REDIRECTS,
            allow_http=True,
            allow_loopback=settings.IMAGE_URL_ALLOW_LOOPBACK,
        )
    except egress.EgressRefused as exc:  # the rule, too many redirects, too large
        raise ImageRejected(str(exc)) from None
    except egress.EgressFailed as exc:
        if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (408, 429):
            raise ImageRejected(str(exc)) from None
        raise ImageFetchFailed(str(exc)) from exc
    except egress.EgressLookupFailed as exc:
        raise ImageFetchFailed(str(exc)) from exc
    return fetched.content


def _original_take(image: ProductImage) -> ProductImage | None:
    """Fetch and store the original of a URL image. Returns the image, or None when the
    product already has this original (the duplicate row is deleted: one image)."""
    content = _fetch(image)
    inspected = image_inspect(content)
    content_hash = hashlib.sha256(content).hexdigest()
    name = original_file_name(content_hash, inspected.format)
    _store(name, content)
    fields = {
        "original_name": name,
        "content_hash": content_hash,
        "size": len(content),
        "width": inspected.width,
        "height": inspected.height,
        "format": inspected.format,
    }
    try:
        with transaction.atomic():
            # Another image of the product with this original (not this one: a concurrent run of
            # the same job may have stored it on this row already, which is no duplicate).
            others = ProductImage.objects.filter(product_id=image.product_id, content_hash=content_hash)
            if others.exclude(id=image.id).exists():
                ProductImage.objects.filter(id=image.id).delete()
                return None
            ProductImage.objects.filter(id=image.id).update(**fields, updated_at=timezone.now())
    except IntegrityError:  # another run stored the same original on this product meanwhile
        ProductImage.objects.filter(id=image.id, content_hash="").delete()
        return None
    for field, value in fields.items():
        setattr(image, field, value)
    return image


def _fail(image_id: int, reason: str) -> None:
    ProductImage.objects.filter(id=image_id).update(
        status=ImageStatus.FAILED, error=reason[:2000], updated_at=timezone.now()
    )
    IMAGES_PROCESSED.labels(outcome="failed").inc()
    logger.info("images.failed", extra={"image_id": image_id, "reason": reason[:500]})


def image_mark_failed(*, image_id: int, reason: str) -> None:
    """Retries ran out (the task's last attempt): the image fails with the last reason."""
    _fail(image_id, reason)


def image_process(*, image_id: int, names: list[str] | None = None, force: bool = False) -> str:
    """Make the image's variants (all, or those in ``names``). Returns the outcome:
    ``ready``, ``unchanged`` (already complete; ``force`` redoes it), ``failed`` (the content
    or URL is refused, for good: recorded on the image, not retried), ``duplicate`` (the
    product has this original already), ``gone``. Raises ImageFetchFailed (retry).

    Idempotent: the same original gives the same names and rows, so a second run, or
    two at once, leave what one leaves."""
    image = ProductImage.objects.filter(id=image_id).prefetch_related("variants").first()
    if image is None:
        return "gone"
    if not force and (image.status == ImageStatus.FAILED or image_is_complete(image, names)):
        return "unchanged"
    ProductImage.objects.filter(id=image_id).update(attempts=F("attempts") + 1)
    try:
        if not image.original_name:
            image = _original_take(image)
            if image is None:
                IMAGES_PROCESSED.labels(outcome="duplicate").inc()
                return "duplicate"
        with default_storage.open(image.original_name, "rb") as original:
            renditions = render(original.read(), names=names)
    except ImageRejected as exc:
        _fail(image_id, str(exc))
        return "failed"
    except ImageFetchFailed as exc:
        ProductImage.objects.filter(id=image_id).update(error=str(exc)[:2000], updated_at=timezone.now())
        raise
    rows = []
    for rendition in renditions:
        file_name = variant_file_name(image.content_hash, rendition.name, rendition.format)
        _store(file_name, rendition.content)
        rows.append(
            ProductImageVariant(
                image_id=image.id,
                name=rendition.name,
                format=rendition.format,
                width=rendition.width,
                height=rendition.height,
                size=len(rendition.content),
                file_name=file_name,
            )
        )
    with transaction.atomic():
        if not ProductImage.objects.select_for_update().filter(id=image_id).exists():
            return "gone"  # deleted while we rendered: its files go with the sweep
        ProductImageVariant.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["image", "name", "format"],
            update_fields=["width", "height", "size", "file_name"],
        )
        # Variants of names or formats no longer configured go (their files with the sweep).
        current = expected_variants(image)
        variants = ProductImageVariant.objects.filter(image_id=image_id)
        stale = [v.id for v in variants if (v.name, v.format) not in current]
        ProductImageVariant.objects.filter(id__in=stale).delete()
        ProductImage.objects.filter(id=image_id).update(
            status=ImageStatus.READY, error="", processed_at=timezone.now(), updated_at=timezone.now()
        )
    IMAGES_PROCESSED.labels(outcome="ready").inc()
    logger.info("images.ready", extra={"image_id": image_id, "variants": len(rows)})
    return "ready"


def images_needing_work(*, all_images: bool = False, names: list[str] | None = None):
    """Images the backfill would process: every one (``all_images``), or those not ready
    or missing a current variant (of ``names``, if given). A list (checked in Python)."""
    images = ProductImage.objects.prefetch_related("variants").order_by("id")
    if all_images:
        return list(images)
    return [image for image in images.iterator(chunk_size=500) if not image_is_complete(image, names)]


# --- cleanup --------------------------------------------------------------------------


def _stored_files(directory: str):
    directories, files = default_storage.listdir(directory)
    for name in files:
        yield f"{directory}/{name}"
    for sub in directories:
        yield from _stored_files(f"{directory}/{sub}")


def images_sweep_orphans(*, grace_hours: float | None = None, dry_run: bool = False) -> list[str]:
    """Delete stored image files that no image refers to, once older than the grace period.
    Returns their names. Re-runnable: what is referenced or young stays."""
    grace = settings.IMAGE_ORPHAN_GRACE_HOURS if grace_hours is None else grace_hours
    cutoff = timezone.now() - timedelta(hours=grace)
    stored = [name for directory in ("originals", "variants") for name in _stored_files(f"{ROOT}{directory}")]
    if not stored:
        return []
    referenced = set(ProductImage.objects.exclude(original_name="").values_list("original_name", flat=True))
    referenced |= set(ProductImageVariant.objects.values_list("file_name", flat=True))
    deleted = []
    for name in stored:
        if name in referenced or default_storage.get_modified_time(name) > cutoff:
            continue
        if not dry_run:
            default_storage.delete(name)
        deleted.append(name)
    if deleted:
        logger.info("images.orphans_deleted", extra={"count": len(deleted), "dry_run": dry_run})
    return deleted


# --- reading ---------------------------------------------------------------------------


def _rank(order: list[str], item: str) -> int:
    return order.index(item) if item in order else len(order)


def image_json(image: ProductImage) -> dict:
    """An image as the API shows it (products, enriched orders); uses prefetched variants.
    Variant URLs come from the storage: the CDN host (AWS_S3_CUSTOM_DOMAIN) with S3."""
    preference = list(settings.IMAGE_FORMATS)
    variants: dict[str, dict] = {}
    for variant in sorted(image.variants.all(), key=lambda v: (v.width, _rank(preference, v.format))):
        entry = variants.setdefault(variant.name, {"width": variant.width, "height": variant.height, "urls": {}})
        entry["urls"][variant.format] = default_storage.url(variant.file_name)
    return {
        "id": image.id,
        "position": image.position,
        "status": image.status,
        "error": image.error,
        "width": image.width,
        "height": image.height,
        "format": image.format,
        "source_url": image.source_url,
        "variants": variants,
    }
