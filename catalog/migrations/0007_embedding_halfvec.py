"""Embeddings stored as halfvec(384) with an HNSW index on halfvec_cosine_ops (pgvector >= 0.7).

The column is converted in place (vector -> halfvec cast); the index is dropped first and
built again after, on the converted column. At 1M products the build takes a while: see
docs/operations.md (Upgrading).
"""

import pgvector.django.halfvec
import pgvector.django.indexes
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0006_keyword_search"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="productembedding", name="embedding_vector_hnsw"),
        migrations.AlterField(
            model_name="productembedding",
            name="vector",
            field=pgvector.django.halfvec.HalfVectorField(blank=True, dimensions=384, null=True),
        ),
        migrations.AddIndex(
            model_name="productembedding",
            index=pgvector.django.indexes.HnswIndex(
                ef_construction=128,
                fields=["vector"],
                m=16,
                name="embedding_vector_hnsw",
                opclasses=["halfvec_cosine_ops"],
            ),
        ),
    ]
