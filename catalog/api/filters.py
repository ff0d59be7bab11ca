import django_filters
from django.db.models import Exists, OuterRef

from celeste.api.params import StrictBooleanField

from ..models import Product, StockLevel, Store


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class ProductFilter(django_filters.FilterSet):
    store = django_filters.ModelChoiceFilter(
        field_name="stock_levels__store",
        queryset=Store.objects.all(),
        method="filter_store",
        help_text="Products stocked by this store.",
    )
    active = StrictBooleanFilter()
    in_stock = StrictBooleanFilter(
        method="filter_in_stock", help_text="Quantity > 0 (in `store` if given, else in any store)."
    )
    price_min = django_filters.NumberFilter(field_name="price", lookup_expr="gte")
    price_max = django_filters.NumberFilter(field_name="price", lookup_expr="lte")

    class Meta:
        model = Product
        fields = ["category", "sku"]

    def filter_store(self, queryset, name, store):
        return queryset.filter(Exists(StockLevel.objects.filter(product_id=OuterRef("pk"), store=store)))

    def filter_in_stock(self, queryset, name, value):
        stocked = StockLevel.objects.filter(product_id=OuterRef("pk"), quantity__gt=0)
        store = self.form.cleaned_data.get("store")
        if store is not None:
            stocked = stocked.filter(store=store)
        return queryset.filter(Exists(stocked) if value else ~Exists(stocked))


class StockLevelFilter(django_filters.FilterSet):
    min_quantity = django_filters.NumberFilter(field_name="quantity", lookup_expr="gte")

    class Meta:
        model = StockLevel
        fields = ["store", "product"]
