from django.contrib import admin, messages
from django.db import transaction

from . import popularity, services
from .models import Product, StockLevel, Store
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
        """The stock-level inline, through the services: a row whose store changed
        moves its stock (the old pair goes, the new one is set)."""
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
