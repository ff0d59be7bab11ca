from django.db import models


class SyncStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SYNCED = "synced", "Synced"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped (integration off or not mapped)"


class OdooOrderLink(models.Model):
    """Where a paid Celeste order lives in Odoo (its sale.order), and how its sync went."""

    order = models.OneToOneField("orders.Order", on_delete=models.CASCADE, related_name="odoo_link")
    odoo_id = models.PositiveIntegerField(null=True, blank=True, help_text="Id of the sale.order in Odoo.")
    status = models.CharField(max_length=20, choices=SyncStatus.choices, default=SyncStatus.PENDING, db_index=True)
    error = models.TextField(blank=True, help_text="Why the last attempt failed.")
    attempts = models.PositiveIntegerField(default=0)
    synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "Odoo order link"

    def __str__(self):
        return f"order {self.order_id} → sale.order {self.odoo_id or '?'} ({self.status})"


class InventorySyncState(models.Model):
    """Sync state of one (product, store) stock pair.

    A stock change's task bumps ``version`` and sets ``dirty`` (changes that
    waited in the queue together are marked by one task); a push sends the
    quantity StockLevel holds *at send time* and clears ``dirty`` only if no
    change arrived meanwhile (``version`` unchanged). So any number of changes
    between two pushes cost one write, and nothing stale is ever sent. The
    queued push takes a pair at most once per ODOO_INVENTORY_DEBOUNCE_SECONDS,
    counted from ``synced_at``.
    """

    product = models.ForeignKey("catalog.Product", on_delete=models.CASCADE, related_name="odoo_sync_states")
    store = models.ForeignKey("catalog.Store", on_delete=models.CASCADE, related_name="odoo_sync_states")
    dirty = models.BooleanField(default=True)
    version = models.PositiveBigIntegerField(default=1, help_text="Bumped on every stock change.")
    synced_version = models.PositiveBigIntegerField(default=0, help_text="The version last sent to Odoo.")
    synced_quantity = models.IntegerField(null=True, blank=True, help_text="The quantity last sent to Odoo.")
    status = models.CharField(max_length=20, choices=SyncStatus.choices, default=SyncStatus.PENDING, db_index=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Failed pushes since the last success.")
    changed_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["store_id", "product_id"]
        verbose_name = "Odoo inventory sync state"
        constraints = [
            models.UniqueConstraint(fields=["product", "store"], name="odoo_inventory_state_unique_pair"),
        ]
        indexes = [
            # The push claims dirty pairs, oldest change first.
            models.Index(fields=["changed_at"], condition=models.Q(dirty=True), name="odoo_inventory_dirty_idx"),
        ]

    def __str__(self):
        return f"product {self.product_id} @ store {self.store_id} ({self.status}{', dirty' if self.dirty else ''})"
