"""Product images: rendering, ingest (API, admin, product create), the processing task,
its failure paths, the API and enriched-order JSON, the backfill command and the sweep."""

import io
import os
import time

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from PIL import Image

from catalog import images
from catalog.models import ImageStatus, ProductImage, ProductImageVariant
from catalog.tasks import process_product_image, sweep_image_files
from celeste.background.models import OutboxMessage
from orders.enriched import enriched_order_build
from orders.selectors import order_cache_version, orders_with_relations

from ..factories import ProductFactory, place_order
from .conftest import picture, swapped_rgb_profile

pytestmark = pytest.mark.django_db


def jobs(image_id=None) -> int:
    rows = OutboxMessage.objects.filter(task_name=process_product_image.name)
    return rows.filter(kwargs__image_id=image_id).count() if image_id else rows.count()


def upload(client, product, content: bytes, name: str = "photo.jpg"):
    return client.post(
        f"/api/v1/products/{product.id}/images", {"file": io.BytesIO(content) | _named(name)}, format="multipart"
    )


class _named:
    """``BytesIO | _named("x.jpg")``: a file object with a name, as a browser sends it."""

    def __init__(self, name):
        self.name = name

    def __ror__(self, buffer):
        buffer.name = self.name
        return buffer


def process(image_id: int, **kwargs) -> str:
    return process_product_image.apply(kwargs={"image_id": image_id, **kwargs}).get()


def stored_files(root) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


# --- rendering -------------------------------------------------------------------------


def test_variants_fit_the_longest_side_in_every_format_and_are_never_upscaled(settings):
    renditions = images.render(picture(size=(1600, 1000)))

    sizes = {(r.name, r.format): (r.width, r.height) for r in renditions}
    assert sizes[("small", "webp")] == (160, 100)
    assert sizes[("medium", "avif")] == (480, 300)
    assert sizes[("large", "jpeg")] == (1200, 750)
    assert {r.format for r in renditions} == {"avif", "webp", "jpeg"}
    for rendition in renditions:  # the content is what the name says
        assert (
            Image.open(io.BytesIO(rendition.content)).format
            == {"avif": "AVIF", "webp": "WEBP", "jpeg": "JPEG"}[rendition.format]
        )
    small = images.render(picture(size=(300, 200)))
    assert {(r.name, r.width, r.height) for r in small} == {
        ("small", 160, 107),
        ("medium", 300, 200),
        ("large", 300, 200),
    }


def test_exif_orientation_is_applied_then_metadata_stripped():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    exif[0x010F] = "CameraMaker"
    content = picture(size=(400, 200), exif=exif.tobytes())

    for rendition in images.render(content, names=["medium"]):
        out = Image.open(io.BytesIO(rendition.content))
        assert (out.width, out.height) == (200, 400)
        assert not out.getexif()
        assert "icc_profile" not in out.info and "exif" not in out.info
        # The red left half of the stored pixels is on top once rotated.
        top, bottom = out.convert("RGB").getpixel((100, 20)), out.convert("RGB").getpixel((100, 380))
        assert top[0] > 150 and top[1] < 100 and bottom == pytest.approx((255, 255, 255), abs=12)


def test_colour_is_converted_to_srgb_through_the_embedded_profile():
    # Pixel values (230, 10, 10) mean blue in this profile: sRGB output must show blue, with no profile left.
    tagged = picture("PNG", (200, 200), color=(230, 10, 10), icc_profile=swapped_rgb_profile())

    for rendition in images.render(tagged, names=["small"]):
        out = Image.open(io.BytesIO(rendition.content))
        assert "icc_profile" not in out.info
        r, g, b = out.convert("RGB").getpixel((20, 50))
        assert b > 180 and r < 60 and g < 60, (rendition.format, (r, g, b))


def test_cmyk_is_converted_to_rgb():
    cmyk = io.BytesIO()
    Image.new("CMYK", (100, 100), (0, 255, 255, 0)).save(cmyk, "JPEG")

    for rendition in images.render(cmyk.getvalue(), names=["small"]):
        r, g, b = Image.open(io.BytesIO(rendition.content)).convert("RGB").getpixel((50, 50))
        assert r > 200 and g < 80 and b < 80


def test_an_animated_image_uses_its_first_frame():
    frames = [Image.new("RGB", (100, 100), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)

    out = Image.open(io.BytesIO(images.render(buffer.getvalue(), names=["small"])[0].content)).convert("RGB")

    r, _, b = out.getpixel((50, 50))
    assert r > 200 and b < 60
    assert getattr(out, "n_frames", 1) == 1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>', "SVG is not"),
        (b"%PDF-1.4 not an image", "Not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "Not an image"),
        (picture("PNG", (64, 64))[:-30], "corrupt"),
    ],
    ids=["svg", "pdf", "png-header-only", "truncated-png"],
)
def test_the_content_decides_and_anything_pillow_cannot_decode_is_refused(content, reason):
    with pytest.raises(images.ImageRejected, match=reason):
        images.image_inspect(content)


def test_a_decompression_bomb_is_refused(settings):
    settings.IMAGE_MAX_PIXELS = 1_000_000
    bomb = picture("PNG", (2000, 1000), color=(0, 0, 0))  # small file, 2 megapixels
    assert len(bomb) < 50_000

    with pytest.raises(images.ImageRejected, match="more than 1000000"):
        images.image_inspect(bomb)
    settings.IMAGE_MAX_PIXELS = 100_000  # past Pillow's own hard limit (2x) too
    with pytest.raises(images.ImageRejected, match="more than 100000 pixels"):
        images.image_inspect(bomb)


def test_variant_names_are_content_addressed_by_original_and_spec(settings):
    first = images.variant_file_name("a" * 64, "small", "webp")

    assert images.variant_file_name("a" * 64, "small", "webp") == first
    assert images.variant_file_name("b" * 64, "small", "webp") != first
    settings.IMAGE_FORMATS = {**settings.IMAGE_FORMATS, "webp": 50}
    assert images.variant_file_name("a" * 64, "small", "webp") != first


# --- ingest through the API ---------------------------------------------------------------


def test_an_upload_stores_the_original_and_answers_202_with_the_image_pending(staff_client, media):
    product = ProductFactory()
    content = picture()

    response = upload(staff_client, product, content)

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "pending" and body["variants"] == {}
    assert (body["width"], body["height"], body["format"]) == (1600, 1000, "JPEG")
    image = ProductImage.objects.get(id=body["id"])
    assert default_storage.open(image.original_name).read() == content
    assert jobs(image.id) == 1


def test_the_same_original_twice_is_one_image(staff_client, media):
    product = ProductFactory()
    content = picture()

    first = upload(staff_client, product, content)
    second = upload(staff_client, product, content, name="renamed.png")

    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["id"] == second.json()["id"]
    assert product.images.count() == 1 and jobs() == 1


@pytest.mark.parametrize(
    ("content", "name"),
    [
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "logo.svg"),
        (b"hello, not an image", "photo.jpg"),  # the extension decides nothing
    ],
)
def test_an_upload_that_is_not_an_image_is_a_400_and_changes_nothing(staff_client, media, content, name):
    product = ProductFactory()

    response = upload(staff_client, product, content, name=name)

    assert response.status_code == 400
    assert "file" in response.json()
    assert not ProductImage.objects.exists() and jobs() == 0


def test_an_upload_over_the_size_limit_is_a_400(staff_client, media, settings):
    settings.IMAGE_MAX_BYTES = 10_000
    product = ProductFactory()

    response = upload(staff_client, product, picture("PNG", (800, 800), color=(1, 2, 3)) + os.urandom(20_000))

    assert response.status_code == 400 and "10000 bytes" in str(response.json())
    assert not ProductImage.objects.exists() and stored_files(media) == set()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "detail"),
        ({"url": "ftp://example.com/a.jpg"}, "url"),
        ({"url": "http://10.0.0.8/a.jpg"}, "url"),  # a private address, refused at once
        ({"url": "http://169.254.169.254/latest/meta-data/"}, "url"),
    ],
)
def test_bad_image_requests_are_400s(staff_client, media, body, field):
    product = ProductFactory()

    response = staff_client.post(f"/api/v1/products/{product.id}/images", body, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not ProductImage.objects.exists()


def test_only_staff_add_images(customer_client, api_client, media):
    product = ProductFactory()
    for client in (customer_client, api_client):
        assert upload(client, product, picture()).status_code in (401, 403)
    assert not ProductImage.objects.exists()


def test_a_url_is_accepted_and_fetched_later(staff_client, image_server):
    product = ProductFactory()

    response = staff_client.post(
        f"/api/v1/products/{product.id}/images", {"url": image_server.url("/a.jpg")}, format="json"
    )

    assert response.status_code == 202
    assert response.json()["source_url"] == image_server.url("/a.jpg")
    assert image_server.requests == []  # nothing was fetched in the request
    assert jobs(response.json()["id"]) == 1


def test_creating_a_product_with_image_urls_enqueues_their_ingest(staff_client, image_server):
    urls = [image_server.url("/a.jpg"), image_server.url("/b.png")]

    response = staff_client.post(
        "/api/v1/products/",
        {"sku": "IMG-1", "name": "Pictured", "price": "1.00", "image_urls": urls},
        format="json",
    )

    assert response.status_code == 201, response.content
    assert [image["source_url"] for image in response.json()["images"]] == urls
    assert [image["status"] for image in response.json()["images"]] == ["pending", "pending"]
    assert jobs() == 2


def test_a_product_with_a_refused_image_url_is_not_created(staff_client):
    response = staff_client.post(
        "/api/v1/products/",
        {"sku": "IMG-2", "name": "Pictured", "price": "1.00", "image_urls": ["http://127.0.0.1/a.jpg"]},
        format="json",
    )

    assert response.status_code == 400 and "image_urls" in response.json()
    assert not ProductImage.objects.exists() and jobs() == 0


# --- the processing task ---------------------------------------------------------------------


def test_the_task_makes_every_variant_and_the_api_shows_their_urls(staff_client, api_client, media):
    product = ProductFactory()
    image_id = upload(staff_client, product, picture()).json()["id"]

    assert process(image_id) == "ready"

    body = api_client.get(f"/api/v1/products/{product.id}/").json()
    (image,) = body["images"]
    assert image["status"] == "ready" and image["error"] == ""
    assert set(image["variants"]) == {"small", "medium", "large"}
    large = image["variants"]["large"]
    assert (large["width"], large["height"]) == (1200, 750)
    assert list(large["urls"]) == ["avif", "webp", "jpeg"]  # preferred first
    for url in large["urls"].values():
        assert url.startswith("/media/images/variants/")
        name = url.removeprefix("/media/")
        assert default_storage.exists(name)
        assert api_client.get(url).status_code == 200  # served locally by the web


def test_the_task_running_twice_produces_the_same_files_and_rows(staff_client, media):
    product = ProductFactory()
    image_id = upload(staff_client, product, picture()).json()["id"]
    process(image_id)
    rows = list(ProductImageVariant.objects.filter(image_id=image_id).values_list("id", "file_name", "size"))
    files = {name: os.path.getmtime(media / name) for name in stored_files(media)}

    assert process(image_id) == "unchanged"
    assert process(image_id, force=True) == "ready"

    assert list(ProductImageVariant.objects.filter(image_id=image_id).values_list("id", "file_name", "size")) == rows
    assert stored_files(media) == set(files)
    assert len(rows) == 9


def test_a_url_image_is_fetched_and_processed(image_server, media):
    image_server.files["/photo.png"] = ("image/png", picture("PNG", (500, 250)))
    product = ProductFactory(image_urls=[image_server.url("/photo.png")])
    (image,) = product.images.all()

    assert process(image.id) == "ready"

    image.refresh_from_db()
    assert (image.format, image.width, image.height, image.size) == (
        "PNG",
        500,
        250,
        len(image_server.files["/photo.png"][1]),
    )
    assert image.variants.count() == 9


def test_a_url_that_gives_an_original_the_product_has_is_the_same_image(staff_client, image_server, media):
    content = picture()
    image_server.files["/same.jpg"] = ("image/jpeg", content)
    product = ProductFactory()
    uploaded = upload(staff_client, product, content).json()["id"]
    by_url = images.product_image_add_url(product=product, url=image_server.url("/same.jpg"))[0]

    assert process(by_url.id) == "duplicate"

    assert list(product.images.values_list("id", flat=True)) == [uploaded]


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda s: s.files.update({"/x.svg": ("image/jpeg", b"<svg xmlns='http://www.w3.org/2000/svg'/>")}), "SVG"),
        (lambda s: s.status.update({"/x.svg": 404}), "HTTP 404"),
        (lambda s: s.redirects.update({"/x.svg": "http://169.254.169.254/latest/meta-data/"}), "not a public address"),
        (lambda s: s.redirects.update({"/x.svg": "http://10.1.2.3/x.jpg"}), "not a public address"),
        (lambda s: s.redirects.update({"/x.svg": "file:///etc/passwd"}), "must use http or https"),
    ],
    ids=["svg-as-jpeg", "not-found", "redirect-to-metadata", "redirect-to-private", "redirect-to-file"],
)
def test_a_refused_url_image_fails_with_its_reason_and_the_product_stays_usable(
    image_server, media, api_client, setup, reason
):
    setup(image_server)
    product = ProductFactory(image_urls=[image_server.url("/x.svg")])
    (image,) = product.images.all()

    assert process(image.id) == "failed"

    image.refresh_from_db()
    assert image.status == ImageStatus.FAILED and reason in image.error
    response = api_client.get(f"/api/v1/products/{product.id}/")
    assert response.status_code == 200
    assert response.json()["images"][0]["status"] == "failed" and reason in response.json()["images"][0]["error"]
    assert process(image.id) == "unchanged"  # not retried


def test_a_bomb_fails_the_image_and_is_not_retried(staff_client, media, settings):
    product = ProductFactory()
    image_id = upload(staff_client, product, picture("PNG", (2000, 1000))).json()["id"]
    settings.IMAGE_MAX_PIXELS = 1_000_000  # lowered after the upload: the task meets the bomb

    assert process(image_id) == "failed"

    image = ProductImage.objects.get(id=image_id)
    assert image.status == ImageStatus.FAILED and "more than 1000000" in image.error
    assert image.attempts == 1


def test_an_unreachable_url_is_a_transient_failure(image_server, media):
    image_server.status["/down.jpg"] = 503
    product = ProductFactory(image_urls=[image_server.url("/down.jpg")])
    (image,) = product.images.all()

    with pytest.raises(images.ImageFetchFailed, match="HTTP 503"):
        images.image_process(image_id=image.id)

    image.refresh_from_db()
    assert image.status == ImageStatus.PENDING and "HTTP 503" in image.error


def test_a_retry_from_the_inbox_makes_a_failed_image_pending_again(image_server, media):
    product = ProductFactory(image_urls=[image_server.url("/later.jpg")])
    (image,) = product.images.all()
    images.image_mark_failed(image_id=image.id, reason="unreachable")
    image_server.files["/later.jpg"] = ("image/jpeg", picture())

    images.product_image_reopen(image_id=image.id)

    assert process(image.id) == "ready"


# --- enriched orders --------------------------------------------------------------------------


def test_the_enriched_order_includes_product_images_and_its_version_covers_them(staff_client, media, redis):
    order = place_order()
    product = order.items.first().product
    image_id = upload(staff_client, product, picture()).json()["id"]
    before = order_cache_version(order.id)

    process(image_id)

    assert order_cache_version(order.id) != before
    built = enriched_order_build(orders_with_relations().get(id=order.id))
    included = next(item["product"] for item in built["items"] if item["product"]["id"] == product.id)
    assert included["images"][0]["status"] == "ready"
    assert set(included["images"][0]["variants"]) == {"small", "medium", "large"}
    after_ready = order_cache_version(order.id)
    images.product_image_delete(image=ProductImage.objects.get(id=image_id))
    assert order_cache_version(order.id) != after_ready


def test_order_and_product_lists_load_images_in_constant_queries(
    api_client, staff_client, media, django_assert_max_num_queries
):
    for _ in range(3):
        product = ProductFactory()
        process(upload(staff_client, product, picture(color=(product.id % 255, 0, 0))).json()["id"])
    with django_assert_max_num_queries(8):
        assert len(api_client.get("/api/v1/products/").json()["results"]) == 3


# --- backfill and cleanup ---------------------------------------------------------------------


def test_the_backfill_command_processes_what_is_missing(staff_client, media, settings, capsys):
    product = ProductFactory()
    ready = upload(staff_client, product, picture()).json()["id"]
    pending = upload(staff_client, product, picture(color=(0, 200, 0))).json()["id"]
    process(ready)

    call_command("process_product_images", "--dry-run")
    assert "Would process 1 image(s)" in capsys.readouterr().out
    assert ProductImage.objects.get(id=pending).status == ImageStatus.PENDING

    call_command("process_product_images", "--missing")
    assert ProductImage.objects.get(id=pending).status == ImageStatus.READY

    settings.IMAGE_VARIANTS = {**settings.IMAGE_VARIANTS, "small": 100}  # a new size for one variant
    call_command("process_product_images", "--variant", "small", "--dry-run")
    assert "Would process 2 image(s)" in capsys.readouterr().out
    call_command("process_product_images", "--variant", "small")
    assert set(ProductImageVariant.objects.filter(name="small").values_list("width", flat=True)) == {100}
    call_command("process_product_images", "--all", "--dry-run")
    assert "Would process 2 image(s)" in capsys.readouterr().out


def test_the_backfill_refuses_an_unknown_variant(media):
    with pytest.raises(Exception, match="Unknown variant 'huge'"):
        call_command("process_product_images", "--variant", "huge")


def test_the_sweep_deletes_only_old_files_no_image_refers_to(staff_client, media):
    product = ProductFactory()
    kept = upload(staff_client, product, picture()).json()["id"]
    gone = upload(staff_client, product, picture(color=(0, 0, 200))).json()["id"]
    process(kept)
    process(gone)
    gone_files = {
        ProductImage.objects.get(id=gone).original_name,
        *ProductImageVariant.objects.filter(image_id=gone).values_list("file_name", flat=True),
    }
    images.product_image_delete(image=ProductImage.objects.get(id=gone))
    young = media / "images" / "variants" / "zz" / "young.webp"
    young.parent.mkdir(parents=True)
    young.write_bytes(b"written by a request that has not committed yet")
    old = time.time() - 2 * 86400
    for path in media.rglob("*"):
        if path.is_file() and path != young:
            os.utime(path, (old, old))
    files_before = stored_files(media)

    assert sweep_image_files.apply().get() == len(gone_files)
    assert sweep_image_files.apply().get() == 0  # a second run finds nothing

    assert stored_files(media) == files_before - gone_files
    assert all(default_storage.exists(v.file_name) for v in ProductImageVariant.objects.filter(image_id=kept))
    assert young.exists()


# --- admin ------------------------------------------------------------------------------------


def test_the_admin_shows_thumbnails_and_adds_an_image_by_upload(client, media, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    product = ProductFactory()
    image = images.product_image_upload(product=product, content=picture())[0]
    process(image.id)

    page = client.get(f"/admin/catalog/product/{product.id}/change/").content.decode()
    assert '<img src="/media/images/variants/' in page
    listing = client.get("/admin/catalog/productimage/").content.decode()
    assert "/media/images/variants/" in listing

    form = {
        "sku": product.sku,
        "name": product.name,
        "description": product.description,
        "category": product.category,
        "price": "2.50",
        "currency": product.currency,
        "active": "on",
        "stock_levels-TOTAL_FORMS": "0",
        "stock_levels-INITIAL_FORMS": "0",
        "images-TOTAL_FORMS": "2",
        "images-INITIAL_FORMS": "1",
        "images-0-id": str(image.id),
        "images-0-product": str(product.id),
        "images-0-position": "1",
        "images-1-product": str(product.id),
        "images-1-position": "2",
        "images-1-upload": io.BytesIO(picture(color=(0, 90, 0))) | _named("new.jpg"),
    }
    response = client.post(f"/admin/catalog/product/{product.id}/change/", form)

    assert response.status_code == 302, response.content.decode()[:3000]
    assert product.images.count() == 2 and jobs() == 2


# --- through a real worker ----------------------------------------------------------------------


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_uploads_and_urls_are_processed_by_a_real_worker_on_the_images_queue(
    start_worker, staff_client, image_server, media
):
    from celeste.background.models import FailedTask

    from ..conftest import wait_for

    image_server.files["/ok.webp"] = ("image/webp", picture("WEBP", (900, 600)))
    image_server.status["/down.jpg"] = 503
    start_worker(MEDIA_ROOT=str(media), IMAGE_URL_ALLOW_LOOPBACK="1")
    product = ProductFactory(image_urls=[image_server.url("/ok.webp"), image_server.url("/down.jpg")])
    uploaded = upload(staff_client, product, picture()).json()["id"]
    by_url, broken = product.images.exclude(id=uploaded).order_by("position")

    wait_for(lambda: ProductImage.objects.filter(id__in=[uploaded, by_url.id], status="ready").count() == 2)
    wait_for(lambda: ProductImage.objects.get(id=broken.id).status == ImageStatus.FAILED, message="retries run out")

    assert ProductImageVariant.objects.filter(image_id__in=[uploaded, by_url.id]).count() == 18
    assert "HTTP 503" in ProductImage.objects.get(id=broken.id).error
    assert image_server.requests.count("/down.jpg") == 2  # TASK_MAX_RETRIES=1: two attempts
    # The image is marked failed inside the task body; the failed-task record is written after it raises.
    wait_for(
        lambda: FailedTask.objects.filter(task_name=process_product_image.name, kwargs__image_id=broken.id).exists(),
        message="failed task recorded",
    )
    body = staff_client.get(f"/api/v1/products/{product.id}/").json()
    assert [image["status"] for image in body["images"]] == ["ready", "failed", "ready"]


def test_an_oversized_body_is_refused_before_it_is_read(staff_client, media, settings):
    settings.IMAGE_MAX_BYTES = 10_000
    product = ProductFactory()

    response = staff_client.generic(
        "POST",
        f"/api/v1/products/{product.id}/images",
        b"x" * 200_000,
        content_type="multipart/form-data; boundary=xyz",
    )

    assert response.status_code == 400 and "10000 bytes" in str(response.json())
    assert not ProductImage.objects.exists()


def test_two_runs_of_one_url_job_leave_one_image(image_server, media):
    # The second run read the row before the first stored the original on it: still the same image.
    image_server.files["/twice.jpg"] = ("image/jpeg", picture())
    product = ProductFactory(image_urls=[image_server.url("/twice.jpg")])
    (stale,) = product.images.all()
    assert process(stale.id) == "ready"

    assert images._original_take(stale) is not None

    assert list(product.images.values_list("id", "status")) == [(stale.id, "ready")]


def test_metrics_show_pending_images_and_processing_outcomes(client, staff_client, media):
    from celeste import metrics

    from ..background.test_metrics import scrape, total

    product = ProductFactory()
    image_id = upload(staff_client, product, picture()).json()["id"]
    ready_before = metrics.sample_value("celeste_images_processed_total", {"outcome": "ready"})

    pending = scrape(client)
    process(image_id)
    after = scrape(client)

    assert total(pending, "celeste_images_pending") == 1 and total(pending, "celeste_image_lag_seconds") >= 0
    assert total(after, "celeste_images_pending") == 0 and total(after, "celeste_image_lag_seconds") == 0
    assert metrics.sample_value("celeste_images_processed_total", {"outcome": "ready"}) == ready_before + 1
