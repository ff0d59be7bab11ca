"""The HNSW index built with m=24 (was 16), chosen by measurement: see the model.

The index is built again (at 1M products, a long build: docs/operations.md, Upgrading).
"""

import pgvector.django.indexes
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0008_embedding_hnsw_ef_construction"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="productembedding", name="embedding_vector_hnsw"),
        migrations.AddIndex(
            model_name="productembedding",
            index=pgvector.django.indexes.HnswIndex(
                ef_construction=64,
                fields=["vector"],
                m=24,
                name="embedding_vector_hnsw",
                opclasses=["halfvec_cosine_ops"],
            ),
        ),
    ]
