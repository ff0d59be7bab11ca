from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.html import format_html

from . import images, popularity, services
from .errors import CatalogConflict
from .models import Product, ProductImage, StockLevel, Store
from .selectors import embedding_status

STORE_FIELDS = ("code", "name", "city", "active", "odoo_location_id")


@admin.register(Store)
class StoreAdmin(admin.ModelAdmin):
    list_display = ("name", "code", "city", "active", "odoo_location_id", "updated_at")
    list_filter = ("active", "city")
    search_fields = ("name", "code", "city")
    prepopulated_fields = {"code": ("name",)}

    def save_model(self, request, obj, form, change):
        fields = {f: form.cleaned_data[f] for f in STORE_FIELDS if f in form.cleaned_data}
        if change:
            services.store_update(store=obj, **fields)
        else:
            obj.pk = services.store_create(**fields).pk

    def delete_model(self, request, obj):
        services.store_delete(store=obj)

    @transaction.atomic
    def delete_queryset(self, request, queryset):
        for store in queryset:
            services.store_delete(store=store)


class StockLevelInline(admin.TabularInline):
    model = StockLevel
    extra = 0
    autocomplete_fields = ("store",)


def _thumbnail(image: ProductImage):
    small = image_variant_url(image)
    if not small:
        return "-"
    return format_html('<img src="{}" alt="" style="max-height:80px;max-width:120px">', small)


def image_variant_url(image: ProductImage) -> str:
    """The smallest variant's URL in the preferred format ("" while there is none)."""
    variants = images.image_json(image)["variants"]
    if not variants:
        return ""
    smallest = min(variants.values(), key=lambda v: v["width"])
    return next(iter(smallest["urls"].values()))


class ProductImageForm(forms.ModelForm):
    """A new image is a file or a URL (taken through the services); existing ones only move or go."""

    upload = forms.FileField(required=False, help_text=f"At most {settings.IMAGE_MAX_BYTES // (1024 * 1024)} MB.")
    url = forms.URLField(required=False, max_length=2000, assume_scheme="https")

    class Meta:
        model = ProductImage
        fields = ("position",)

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk is None and self.has_changed():
            if bool(cleaned.get("upload")) == bool(cleaned.get("url")):
                raise ValidationError("Give either a file or a URL.")
            upload = cleaned.get("upload")
            if upload is not None and upload.size > settings.IMAGE_MAX_BYTES:
                raise ValidationError({"upload": f"At most {settings.IMAGE_MAX_BYTES} bytes."})
        return cleaned


class ProductImageInline(admin.TabularInline):
    model = ProductImage
    form = ProductImageForm
    extra = 1
    fields = ("thumbnail", "position", "status", "error", "dimensions", "upload", "url")
    readonly_fields = ("thumbnail", "status", "error", "dimensions")

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("variants")

    @admin.display(description="image")
    def thumbnail(self, image):
        return _thumbnail(image) if image.pk else "-"

    @admin.display(description="original")
    def dimensions(self, image):
        if not image.width:
            return image.source_url or "-"
        return f"{image.width}×{image.height} {image.format}, {image.size} bytes"


@admin.register(ProductImage)
class ProductImageAdmin(admin.ModelAdmin):
    list_display = ("id", "thumbnail", "product", "position", "status", "error", "format", "updated_at")
    list_filter = ("status", "format")
    search_fields = ("product__name", "product__sku", "source_url", "content_hash")
    list_select_related = ("product",)
    readonly_fields = (
        "thumbnail",
        "product",
        "source_url",
        "original_name",
        "content_hash",
        "size",
        "width",
        "height",
        "format",
        "status",
        "error",
        "attempts",
        "processed_at",
        "created_at",
        "updated_at",
    )
    fields = ("position", *readonly_fields)
    actions = ("reprocess",)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("variants")

    def has_add_permission(self, request):
        return False  # added on the product (inline) or through the API

    @admin.display(description="image")
    def thumbnail(self, image):
        return _thumbnail(image)

    def delete_model(self, request, obj):
        images.product_image_delete(image=obj)

    @transaction.atomic
    def delete_queryset(self, request, queryset):
        for image in queryset:
            images.product_image_delete(image=image)

    @admin.action(description="Process selected images again")
    def reprocess(self, request, queryset):
        count = images.product_images_reprocess(image_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"Queued {count} image(s) for processing.", messages.SUCCESS)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "sku",
        "category",
        "price",
        "currency",
        "active",
        "embedding_state",
        "popularity",
        "updated_at",
    )
    list_filter = ("active", "category", "embedding__status", "currency")
    search_fields = ("name", "sku", "description")
    readonly_fields = (
        "content_hash",
        "embedding_state",
        "embedding_error",
        "popularity",
        "recent_activity",
        "created_at",
        "updated_at",
    )
    inlines = (StockLevelInline, ProductImageInline)
    actions = ("re_embed",)
    list_select_related = ("embedding",)

    @admin.display(description="embedding")
    def embedding_state(self, product):
        return embedding_status(product)

    @admin.display(description="embedding error")
    def embedding_error(self, product):
        embedding = getattr(product, "embedding", None)
        return embedding.error if embedding else ""

    @admin.display(description="Recent activity (24 h)")
    def recent_activity(self, product):
        if product.pk is None:
            return "-"
        counts = popularity.recent_activity(product.pk)
        return ", ".join(f"{kind}: {n}" for kind, n in sorted(counts.items())) or "none"

    def save_model(self, request, obj, form, change):
        fields = {f: form.cleaned_data[f] for f in services.PRODUCT_FIELDS if f in form.cleaned_data}
        if change:
            services.product_update(product=obj, **fields)
        else:
            obj.pk = services.product_create(**fields).pk

    def save_formset(self, request, form, formset, change):
        """The inlines, through the services. Stock levels: a row whose store changed
        moves its stock (the old pair goes, the new one is set). Images: see below."""
        if formset.model is ProductImage:
            return self._save_images(request, form, formset)
        if formset.model is not StockLevel:
            return super().save_formset(request, form, formset, change)
        formset.save(commit=False)  # fills deleted_objects, changed_objects, new_objects; saves nothing
        for level in formset.deleted_objects:
            services.stock_level_delete(stock_level=level)
        for level, changed in formset.changed_objects:
            if "store" in changed:
                services.stock_level_delete(stock_level=StockLevel.objects.get(pk=level.pk))
        for level in [*formset.new_objects, *(level for level, _ in formset.changed_objects)]:
            services.stock_level_set(product=form.instance, store=level.store, quantity=level.quantity)

    def _save_images(self, request, form, formset):
        """New rows: an uploaded file or a URL (stored and enqueued; a refused one is
        reported and skipped); changed rows: their position; deleted rows go."""
        formset.save(commit=False)
        for image in formset.deleted_objects:
            images.product_image_delete(image=image)
        for image, _changed in formset.changed_objects:
            ProductImage.objects.filter(id=image.id).update(position=image.position)
        for row in formset.forms:
            if row.instance.pk is not None or not row.has_changed() or row in formset.deleted_forms:
                continue
            try:
                if row.cleaned_data.get("upload"):
                    images.product_image_upload(product=form.instance, content=row.cleaned_data["upload"].read())
                else:
                    images.product_image_add_url(product=form.instance, url=row.cleaned_data["url"])
            except (images.ImageRejected, CatalogConflict) as exc:
                self.message_user(request, f"Image not added: {exc}", messages.ERROR)

    def delete_model(self, request, obj):
        services.product_delete(product=obj)

    @transaction.atomic
    def delete_queryset(self, request, queryset):
        for product in queryset:
            services.product_delete(product=product)

    @admin.action(description="Re-embed selected products")
    def re_embed(self, request, queryset):
        count = services.embeddings_reset(product_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"Queued {count} product(s) for embedding.", messages.SUCCESS)


@admin.register(StockLevel)
class StockLevelAdmin(admin.ModelAdmin):
    list_display = ("product", "store", "quantity", "updated_at")
    list_filter = ("store",)
    search_fields = ("product__name", "product__sku", "store__name")
    autocomplete_fields = ("product", "store")
    list_select_related = ("product", "store")

    def save_model(self, request, obj, form, change):
        saved = services.stock_level_set(
            product=form.cleaned_data["product"],
            store=form.cleaned_data["store"],
            quantity=form.cleaned_data["quantity"],
        )
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        services.stock_level_delete(stock_level=obj)

    @transaction.atomic
    def delete_queryset(self, request, queryset):
        for level in queryset:
            services.stock_level_delete(stock_level=level)
