"""The real embedding model, loaded from the bundled package, offline, on every backend."""

import numpy as np
import pytest

from catalog.embeddings import BACKENDS, encode


@pytest.fixture(params=BACKENDS, autouse=True)
def backend(request, settings):
    settings.EMBEDDING_BACKEND = request.param


def test_oat_milk_is_closer_to_dairy_free_milk_than_to_a_drill():
    oat, dairy_free, drill = np.array(encode(["oat milk", "dairy-free milk alternative", "cordless drill"]))

    assert oat @ dairy_free > oat @ drill + 0.2


def test_vectors_have_384_dimensions_and_unit_length():
    (vector,) = encode(["sourdough bread"])

    assert len(vector) == 384
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-4
