"""The sentence-embedding model: one encoder per process, loaded on first use.

Three backends run the same model (``EMBEDDING_BACKEND``):

- ``torch``: sentence-transformers, as the model ships.
- ``onnx``: the model exported once with ``torch.onnx.export`` (mean pooling and
  normalisation inside the graph), run by onnxruntime with the model's own tokenizer.
- ``onnx-int8``: that export with its MatMul weights quantized to int8, per channel
  (onnxruntime's ``quantize_dynamic``); per-tensor int8 loses too much (cosine ~0.96).

The ONNX files are made from the configured weights on first use (or by
``manage.py build_encoder``) and cached under ``EMBEDDING_CACHE_DIR``, never
downloaded. Their vectors differ slightly from torch's, so the backend is part of
the model identity stored on each embedding (:func:`model_identity`): switching it
makes every embedding stale, and search only compares vectors of one identity.
"""

import fcntl
import functools
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from django.conf import settings

from .metrics import ENCODE_CALLS, TEXTS_ENCODED

logger = logging.getLogger(__name__)
_load_lock = threading.Lock()

BACKENDS = ("torch", "onnx", "onnx-int8")
# Bump when the export or the quantization changes: cached files of older versions are not reused.
EXPORT_VERSION = 1
ONNX_OPSET = 17
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_identity() -> str:
    """What made a vector: the model and the backend that ran it (stored in ``model_name``)."""
    return f"{settings.EMBEDDING_MODEL_NAME}@{settings.EMBEDDING_BACKEND}"


def model_dir() -> Path:
    """The model's local folder: ``EMBEDDING_MODEL`` itself, or a hub name's cached snapshot."""
    path = Path(settings.EMBEDDING_MODEL)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(settings.EMBEDDING_MODEL))


def cores() -> int:
    """The cores this process may run on (a ``taskset`` or a container's cpuset counts)."""
    return len(os.sched_getaffinity(0))


def lanes() -> int:
    """How many batches an embed job encodes at once, each in a thread of its own
    (``EMBEDDING_LANES``; 0: one per core for the ONNX backends, one for torch, whose own
    threads take every core and whose tokenizer is not safe to share between threads)."""
    if settings.EMBEDDING_LANES:
        return settings.EMBEDDING_LANES
    return 1 if settings.EMBEDDING_BACKEND == "torch" else cores()


def threads() -> int:
    """Threads of one model call (``EMBEDDING_THREADS``; 0: the cores shared out among the lanes).
    Measured on 2 cores with int8: two lanes of one thread each embed 150-160 products/s where
    one lane of two threads embeds 85-120; the threads of one call wait for each other at
    every layer, and the lanes also encode while another lane's batch is being stored."""
    return settings.EMBEDDING_THREADS or max(1, cores() // lanes())


class TorchEncoder:
    def __init__(self, model: str, threads: int):
        import torch
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(model, device="cpu")
        torch.set_num_threads(threads)  # the process's pool: one torch encoder per process

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=max(len(texts), 1),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )


class OnnxEncoder:
    """An exported model in onnxruntime; the graph returns unit-length mean-pooled vectors."""

    def __init__(self, source: Path, onnx_file: Path, threads: int):
        import onnxruntime
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
        # The same truncation as sentence-transformers (its max_seq_length), padding to the longest text.
        self.tokenizer.enable_truncation(max_length=_max_seq_length(source))
        pad = self.tokenizer.padding or {}
        self.tokenizer.enable_padding(pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]"))
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # its warnings about unused initializers are noise here
        # Idle threads sleep instead of spinning: the cores are shared with Postgres and the web.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, settings.EMBEDDING_DIMENSIONS), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(texts)
        feed = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return self.session.run(None, {name: feed[name] for name in ONNX_INPUTS if name in self.inputs})[0]


def _max_seq_length(source: Path) -> int:
    config = source / "sentence_bert_config.json"
    return json.loads(config.read_text()).get("max_seq_length", 256) if config.exists() else 256


def _fingerprint(source: Path) -> str:
    """Key of the cached files: the model's files, the export's version and the tools that made it."""
    import onnxruntime

    digest = hashlib.sha256(f"{EXPORT_VERSION} {ONNX_OPSET} onnxruntime {onnxruntime.__version__}".encode())
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(source)).encode())
        with open(file, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:16]


def onnx_files(source: Path) -> dict[str, Path]:
    """The exported and the quantized model of ``source``, made if missing.

    Made under an exclusive file lock, each written to a temporary name and renamed
    into place: a process that races another waits for it and then uses its files,
    and no process ever reads a half-written one.
    """
    folder = Path(settings.EMBEDDING_CACHE_DIR) / f"{source.name}-{_fingerprint(source)}"
    files = {"onnx": folder / "model.onnx", "onnx-int8": folder / "model-int8.onnx"}
    if all(f.exists() for f in files.values()):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not files["onnx"].exists():
            _atomically(files["onnx"], lambda tmp: _export(source, tmp))
        if not files["onnx-int8"].exists():
            _atomically(files["onnx-int8"], lambda tmp: _quantize(files["onnx"], tmp))
    return files


def _atomically(target: Path, make) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".onnx")
    os.close(fd)
    try:
        make(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; other users (an image's runtime user) read it
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _export(source: Path, target: Path) -> None:
    """Export with mean pooling and L2 normalisation in the graph (what the sentence-transformers
    pipeline of this model does after the transformer)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    pooling = source / "1_Pooling" / "config.json"
    if pooling.exists() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens"):
        raise ValueError(f"{source}: the ONNX backends export mean-pooling models only; use EMBEDDING_BACKEND=torch")
    logger.info("embedding.onnx_exporting", extra={"model": str(source), "target": str(target)})
    # Eager attention traces into plain MatMul/Softmax nodes for any batch and length.
    transformer = AutoModel.from_pretrained(source, attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask, token_type_ids):
            tokens = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )[0]
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    sample = AutoTokenizer.from_pretrained(source)(["a short text", "and a somewhat longer one"], padding=True)
    args = tuple(torch.tensor(sample[name]) for name in ONNX_INPUTS)
    axes = {name: {0: "batch", 1: "tokens"} for name in ONNX_INPUTS} | {"embedding": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(
            Pooled(),
            args,
            str(target),
            input_names=list(ONNX_INPUTS),
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            dynamo=False,  # the TorchScript exporter: the dynamo one needs onnxscript and is slower to run here
        )


def _quantize(exported: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logger.info("embedding.onnx_quantizing", extra={"source": str(exported), "target": str(target)})
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # the quantizer logs a line per tensor on the root logger
    try:
        quantize_dynamic(
            exported, target, per_channel=True, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"]
        )
    finally:
        root.setLevel(level)


@functools.cache
def _encoder(backend: str, model: str, threads: int):
    logger.info("embedding.model_loading", extra={"model": model, "backend": backend, "threads": threads})
    started = time.monotonic()
    if backend == "torch":
        encoder = TorchEncoder(model, threads)
    else:
        source = model_dir()
        encoder = OnnxEncoder(source, onnx_files(source)[backend], threads)
    logger.info("embedding.model_loaded", extra={"backend": backend, "seconds": round(time.monotonic() - started, 1)})
    return encoder


def get_encoder():
    if settings.EMBEDDING_BACKEND not in BACKENDS:
        raise ValueError(f"EMBEDDING_BACKEND must be one of {', '.join(BACKENDS)}, not {settings.EMBEDDING_BACKEND!r}")
    with _load_lock:  # two threads must not load it twice
        return _encoder(settings.EMBEDDING_BACKEND, settings.EMBEDDING_MODEL, threads())


def encode(texts: list[str]) -> np.ndarray:
    """Unit-length vectors for ``texts`` (one float32 row each), in one model call."""
    vectors = get_encoder().encode(texts)
    ENCODE_CALLS.inc()
    TEXTS_ENCODED.inc(len(texts))
    return vectors


@functools.lru_cache(maxsize=settings.SEARCH_QUERY_CACHE_SIZE)
def _query_vector(identity: str, query: str) -> tuple[float, ...]:
    return tuple(encode([query])[0].tolist())


def query_vector(query: str) -> tuple[float, ...]:
    """Search queries repeat a lot; their vectors are cached per process (and per model identity)."""
    return _query_vector(model_identity(), query)


def warm_up_in_background() -> None:
    """Load the model in a web process before the first search needs it."""
    if settings.EMBEDDING_WARM_ON_START:
        threading.Thread(target=get_encoder, name="embedding-warm-up", daemon=True).start()
