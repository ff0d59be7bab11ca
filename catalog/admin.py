from django.contrib import admin, messages

from . import services
from .models import Product, StockLevel, Store
from .selectors import embedding_status


@admin.register(Store)
class StoreAdmin(admin.ModelAdmin):
    list_display = ("name", "code", "city", "active", "odoo_location_id", "updated_at")
    list_filter = ("active", "city")
    search_fields = ("name", "code", "city")
    prepopulated_fields = {"code": ("name",)}


class StockLevelInline(admin.TabularInline):
    model = StockLevel
    extra = 0
    autocomplete_fields = ("store",)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("name", "sku", "category", "price", "currency", "active", "embedding_state", "updated_at")
    list_filter = ("active", "category", "embedding__status", "currency")
    search_fields = ("name", "sku", "description")
    readonly_fields = ("content_hash", "embedding_state", "embedding_error", "created_at", "updated_at")
    inlines = (StockLevelInline,)
    actions = ("re_embed",)
    list_select_related = ("embedding",)

    @admin.display(description="embedding")
    def embedding_state(self, product):
        return embedding_status(product)

    @admin.display(description="embedding error")
    def embedding_error(self, product):
        embedding = getattr(product, "embedding", None)
        return embedding.error if embedding else ""

    def save_model(self, request, obj, form, change):
        fields = {f: form.cleaned_data[f] for f in services.PRODUCT_FIELDS if f in form.cleaned_data}
        if change:
            services.product_update(product=obj, **fields)
        else:
            obj.pk = services.product_create(**fields).pk

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
            product=form.cleaned_data["product"], store=form.cleaned_data["store"], quantity=form.cleaned_data["quantity"]
        )
        obj.pk = saved.pk
