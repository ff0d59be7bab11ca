"""The sentence-embedding model: loaded once per process, on first use."""

import functools
import logging
import threading

from django.conf import settings

from .metrics import ENCODE_CALLS, TEXTS_ENCODED

logger = logging.getLogger(__name__)
_load_lock = threading.Lock()


@functools.cache
def _model():
    from sentence_transformers import SentenceTransformer

    logger.info("embedding.model_loading", extra={"model": settings.EMBEDDING_MODEL})
    return SentenceTransformer(settings.EMBEDDING_MODEL, device="cpu")


def get_model():
    with _load_lock:  # two threads must not load it twice
        return _model()


def encode(texts: list[str]) -> list[list[float]]:
    """Unit-length vectors for ``texts``, in one model call."""
    vectors = get_model().encode(
        texts, batch_size=max(len(texts), 1), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    ENCODE_CALLS.inc()
    TEXTS_ENCODED.inc(len(texts))
    return vectors.tolist()


@functools.lru_cache(maxsize=settings.SEARCH_QUERY_CACHE_SIZE)
def query_vector(query: str) -> tuple[float, ...]:
    """Search queries repeat a lot; their vectors are cached per process."""
    return tuple(encode([query])[0])


def warm_up_in_background() -> None:
    """Load the model in a web process before the first search needs it."""
    if settings.EMBEDDING_WARM_ON_START:
        threading.Thread(target=get_model, name="embedding-warm-up", daemon=True).start()
