"""Product images on S3: a real S3-protocol server (moto's server mode, a thread serving
HTTP on loopback), django-storages' S3 storage pointed at it, and the CDN domain."""

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from catalog import images
from catalog.models import ProductImageVariant

from ..conftest import BUCKET, CDN
from ..factories import ProductFactory
from .conftest import picture


@pytest.mark.django_db
def test_images_go_to_s3_with_long_cache_control_and_cdn_urls(s3, api_client, settings):
    product = ProductFactory()
    content = picture()
    image, _ = images.product_image_upload(product=product, content=content)

    assert images.image_process(image_id=image.id) == "ready"
    assert images.image_process(image_id=image.id, force=True) == "ready"  # a rerun writes the same keys

    keys = {obj["Key"] for obj in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    variants = set(ProductImageVariant.objects.filter(image=image).values_list("file_name", flat=True))
    assert keys == variants | {image.original_name} and len(variants) == 9
    assert s3.get_object(Bucket=BUCKET, Key=image.original_name)["Body"].read() == content
    for key in keys:
        assert s3.head_object(Bucket=BUCKET, Key=key)["CacheControl"] == settings.MEDIA_IMMUTABLE_CACHE_CONTROL
    (shown,) = api_client.get(f"/api/v1/products/{product.id}/").json()["images"]
    urls = [url for variant in shown["variants"].values() for url in variant["urls"].values()]
    assert len(urls) == 9
    assert all(url.startswith(f"https://{CDN}/images/variants/") for url in urls)
    assert {url.removeprefix(f"https://{CDN}/") for url in urls} == variants


@pytest.mark.django_db
def test_files_outside_the_image_prefix_keep_the_bucket_default(s3):
    default_storage.save("reports/r.csv", ContentFile(b"a,b\n"))

    assert "CacheControl" not in s3.head_object(Bucket=BUCKET, Key="reports/r.csv")


@pytest.mark.django_db
def test_the_sweep_deletes_orphans_on_s3(s3):
    product = ProductFactory()
    image, _ = images.product_image_upload(product=product, content=picture())
    images.image_process(image_id=image.id)
    images.product_image_delete(image=image)

    assert len(images.images_sweep_orphans(grace_hours=0)) == 10

    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
