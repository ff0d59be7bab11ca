"""The embedding backends (torch, onnx, onnx-int8): quality against torch, the cached
ONNX files, and switching backend without mixing vectors in search."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from catalog import embeddings, tasks
from catalog.models import EmbeddingStatus, ProductEmbedding, embedding_text
from catalog.selectors import embedding_status, product_search
from catalog.services import embedding_sweep, embeddings_embed_stale, stale_embeddings
from celeste.devserver.processes import BASE_DIR

from ..conftest import queued_messages
from ..factories import ProductFactory

SAMPLE = 120  # catalog texts; the `embedding_pipeline` bench measures 1,000


def catalog_texts() -> list[str]:
    products = json.loads((BASE_DIR / "catalog" / "demo_data.json").read_text())["products"][:SAMPLE]
    return [embedding_text(name=p["name"], category=p["category"], description=p["description"]) for p in products]


def vectors(settings, backend: str, texts: list[str]) -> np.ndarray:
    settings.EMBEDDING_BACKEND = backend
    return np.array(embeddings.encode(texts))


def test_onnx_backends_agree_with_torch(settings):
    texts = catalog_texts()
    torch = vectors(settings, "torch", texts)
    onnx = (vectors(settings, "onnx", texts) * torch).sum(axis=1)
    int8 = (vectors(settings, "onnx-int8", texts) * torch).sum(axis=1)

    assert onnx.min() > 0.9999  # the same model, the same maths: only float rounding differs
    assert int8.mean() >= 0.99
    assert int8.min() > 0.97


def test_a_batch_of_mixed_lengths_encodes_like_one_text_at_a_time(settings):
    texts = ["milk", "a long description of a dark roast coffee from the mountains, " * 40, ""]

    settings.EMBEDDING_BACKEND = "onnx"
    together = np.array(embeddings.encode(texts))
    alone = np.array([embeddings.encode([text])[0] for text in texts])
    assert np.allclose(together, alone, atol=1e-5)  # padding is masked and pooled out; truncation applies

    # int8 scales each activation tensor by its own range over the whole batch, so batch-mates
    # move a vector a little (measured: mean cosine 0.989 between batched and alone).
    settings.EMBEDDING_BACKEND = "onnx-int8"
    together = np.array(embeddings.encode(texts))
    alone = np.array([embeddings.encode([text])[0] for text in texts])
    assert (together * alone).sum(axis=1).min() > 0.95


def test_the_model_identity_names_the_backend(settings):
    settings.EMBEDDING_BACKEND = "onnx"
    assert embeddings.model_identity() == f"{settings.EMBEDDING_MODEL_NAME}@onnx"


def test_an_unknown_backend_is_refused_when_the_settings_load():
    env = {**os.environ, "EMBEDDING_BACKEND": "tensorflow", "DJANGO_SETTINGS_MODULE": "celeste.settings.base"}
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=BASE_DIR, env=env, capture_output=True, text=True
    )

    assert done.returncode != 0
    assert "EMBEDDING_BACKEND must be torch, onnx or onnx-int8, not 'tensorflow'" in done.stderr


def test_two_processes_racing_to_build_the_onnx_files_export_once(tmp_path):
    env = {**os.environ, "EMBEDDING_CACHE_DIR": str(tmp_path), "LOG_LEVEL": "INFO", "LOG_FORMAT": "console"}
    argv = [sys.executable, "manage.py", "build_encoder"]
    procs = [
        subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]

    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert sum(output.count("embedding.onnx_exporting") for output in outputs) == 1
    (folder,) = tmp_path.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == [".build.lock", "model-int8.onnx", "model.onnx"]
    for output in outputs:
        assert f"onnx-int8: {folder / 'model-int8.onnx'}" in output
    assert all(oct(p.stat().st_mode)[-3:] == "644" for p in folder.glob("*.onnx"))


@pytest.mark.django_db(transaction=True)
def test_switching_backend_re_embeds_through_the_sweeper_and_search_never_mixes_vectors(settings, redis):
    settings.EMBEDDING_BACKEND = "torch"
    products = [ProductFactory(name=name) for name in ("Oat Milk 1L", "Almond Milk 1L", "Cordless Drill")]
    while embeddings_embed_stale():
        pass
    query = embeddings.query_vector("milk")
    assert len(product_search(vector=query, limit=10)) == 3

    settings.EMBEDDING_BACKEND = "onnx-int8"
    query = embeddings.query_vector("milk")
    assert stale_embeddings().count() == 3
    assert {embedding_status(p) for p in products} == {EmbeddingStatus.PENDING}
    assert product_search(vector=query, limit=10) == []  # torch vectors are not ranked against an int8 query
    redis.flushall()

    assert embedding_sweep(stale_after_seconds=0) == 3
    assert queued_messages(redis) == 1
    assert tasks.embed_products.apply().get() == 3
    assert tasks.embed_products.apply().get() == 0  # a second run finds nothing left

    assert set(ProductEmbedding.objects.values_list("model_name", flat=True)) == {embeddings.model_identity()}
    hits = product_search(vector=query, limit=2)
    assert {hit.product.name for hit in hits} == {"Oat Milk 1L", "Almond Milk 1L"}


def test_embedding_threads_bound_the_onnx_session(settings):
    """EMBEDDING_THREADS is the intra-op pool of one model call (runall gives its worker 1)."""
    settings.EMBEDDING_THREADS = 1
    source = embeddings.model_dir()
    encoder = embeddings.OnnxEncoder(source, embeddings.onnx_files(source)["onnx-int8"], embeddings.threads())

    assert encoder.session.get_session_options().intra_op_num_threads == 1
    assert encoder.encode(["oat drink"]).shape == (1, settings.EMBEDDING_DIMENSIONS)


def test_lanes_and_threads_share_out_the_cores(settings, monkeypatch):
    """By default the ONNX backends run a lane per core of one thread each, torch one lane
    on every core (its tokenizer must not be shared between threads); set values win."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    settings.EMBEDDING_LANES = settings.EMBEDDING_THREADS = 0

    settings.EMBEDDING_BACKEND = "onnx-int8"
    assert (embeddings.lanes(), embeddings.threads()) == (4, 1)
    settings.EMBEDDING_BACKEND = "torch"
    assert (embeddings.lanes(), embeddings.threads()) == (1, 4)
    settings.EMBEDDING_BACKEND = "onnx"
    settings.EMBEDDING_LANES = 2
    assert (embeddings.lanes(), embeddings.threads()) == (2, 2)
    settings.EMBEDDING_THREADS = 3
    assert (embeddings.lanes(), embeddings.threads()) == (2, 3)
