"""The encoder-feature cache: a frozen encoder's output for every utterance, on disk; its key,
its build, and its rows read as training items.

    cache = build_feature_cache(model, dataset, "cache/features")  # prints its size first
    cache.features(row)                            # (n_audio_ctx, n_audio_state) float16
    items = CachedFeatureDataset(dataset, cache)   # "features" in place of "audio"

With the encoder frozen and no augmentation, every epoch computes the same encoder output for
an utterance; storing it once leaves training with decoder-only steps, and validation decodes
from it (`model.decode` skips the encoder when given (batch, n_audio_ctx, n_audio_state)).

One folder per manifest and key under `cache_dir`, `<manifest stem>-<key digest[:16]>/`:

    meta.json      the key (encoder sha256, settings, compute dtype, (id, audio) in dataset
                   order), shape, dtype; "complete": true once every row is stored
    features.f16   (N, n_audio_ctx, n_audio_state) float16, row i = the dataset's utterance i
    done.u8        one byte per row, set to 1 only after the row's bytes are on disk

Any change of the key (an encoder weight, the utterance list, a setting, the dtype the encoder
ran in: a bf16-mixed fit's features are not a 32-true fit's) gives another folder.
Rows are written with ordinary file writes (a full disk raises an error instead of a memory
map's SIGBUS) and marked done only after `flush` has made them durable, so an interrupted
build resumes from the rows done.

Storage is float16: numpy has no bfloat16, and float16 keeps 11 significant bits (relative
rounding <= 2^-11) where bfloat16 keeps 8. Its range suffices: the output of the encoder's
final LayerNorm (`ln_post`) is what openai-whisper itself hands its decoder in float16 on
CUDA (`DecodingOptions(fp16=True)`, the default, halves it in `_get_audio_features`).

In the order of this file:
- the store: `FeatureCacheKey`/`feature_cache_key`, the on-disk format, `FeatureCache`
  (rows written, flushed, marked done; read from a float16 memmap), sizes
  (`estimate_cache_bytes`, `size_message`);
- the build: `build_feature_cache` (DataLoader workers read audio; the log-mel and the encoder
  run on the device under inference mode, the encoder in the fit's precision; resumable),
  `build_lock` (one process builds while the others wait: fits sharing a folder, DDP ranks,
  nodes sharing a disk), `refuse_with_augmentation` (settings under which stored features
  would not be what training computes);
- the store read for training: `CachedFeatures`, the input strategy (`data/inputs.py`) that
  gives items and batches `features` in place of `audio`; `cached(dataset, collator, cache)`.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
import whisper
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm
from whisper.audio import HOP_LENGTH, N_FFT, N_SAMPLES, SAMPLE_RATE
from whisper.model import ModelDimensions, Whisper

from whisper_ft.data.augment import SpecAugment, WaveformAugment
from whisper_ft.data.collate import Collator
from whisper_ft.data.dataset import UtteranceDataset
from whisper_ft.data.sampler import ItemKey, untag
from whisper_ft.data.views import AUDIO, View, view_mel_batch, view_waveform
from whisper_ft.files import atomic_write
from whisper_ft.precision import COMPUTE_DTYPES, compute_dtype_name

CACHE_VERSION = 2  # part of every key: raise it when what is stored, or how, changes
STORAGE_DTYPES = {"float16": "f16", "float32": "f32"}  # storage dtype → features file suffix
_AUDIO_DIMS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")


class FeatureCacheError(ValueError):
    """A feature cache that cannot be built or used; the message says what to do."""


def encoder_fingerprint(model: Whisper, input_of_block: int | None = None) -> str:
    """sha256 (hex) of the encoder: its audio dims, then each state-dict tensor's name, shape,
    dtype and bytes. Another weight, buffer, dtype or head count gives another fingerprint.
    `input_of_block` i: only the part that computes the input of `encoder.blocks[i]` (convs,
    positional embedding, blocks 0 … i-1), so the fingerprint stays while the blocks above
    and `ln_post` train; None: the whole encoder.

    Costs one pass over the encoder's bytes, ~1.5 GB/s on a CPU with SHA instructions:
    ~20 ms for tiny (33 MB in float32), ~1.7 s for large-v3 (2.5 GB).
    """
    digest = hashlib.sha256()
    dims = {name: getattr(model.dims, name) for name in _AUDIO_DIMS}
    digest.update(json.dumps(dims, sort_keys=True).encode())
    for name, tensor in model.encoder.state_dict().items():
        if input_of_block is not None and not _below_block(name, input_of_block):
            continue
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def _below_block(name: str, block: int) -> bool:
    """Whether the encoder state-dict entry `name` computes the input of `blocks[block]`."""
    parts = name.split(".")
    if parts[0] == "ln_post":
        return False
    return parts[0] != "blocks" or int(parts[1]) < block


def encoder_stem(encoder: torch.nn.Module, mel: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """The input of `encoder.blocks[n_blocks]`: Whisper's `AudioEncoder.forward` up to there
    (convs, positional embedding, the first `n_blocks` blocks), without `ln_post`. With
    `models.trainable.encoder_top(encoder, x, n_blocks)` after it, the encoder's output.

    mel : torch.Tensor, shape = (batch, n_mels, 2 * n_audio_ctx)
    returns : torch.Tensor, shape = (batch, n_audio_ctx, n_audio_state)
    """
    x = F.gelu(encoder.conv1(mel))
    x = F.gelu(encoder.conv2(x))
    x = x.permute(0, 2, 1)
    if x.shape[1:] != encoder.positional_embedding.shape:
        raise ValueError(
            f"mel of {mel.shape[-1]} frames gives {x.shape[1]} positions; the encoder takes "
            f"{encoder.positional_embedding.shape[0]} (30 s: pad the audio with pad_or_trim)"
        )
    x = (x + encoder.positional_embedding).to(x.dtype)
    for block in encoder.blocks[:n_blocks]:
        x = block(x)
    return x


@dataclass(frozen=True)
class FeatureCacheKey:
    """Everything the stored features depend on; a cache folder serves exactly one key.

    Utterances are identified by id and audio path as the manifest writes them, not by the
    audio's bytes or mtime: reading every file to hash it would cost a pass over the corpus,
    and copying a corpus (Drive → local disk) changes mtimes. Audio replaced in place under
    the same path needs `rebuild=True` (`cache --rebuild`), as `check-data` needs --recheck.
    """

    encoder_sha256: str  # encoder_fingerprint of the model
    n_mels: int  # log-mel bands the encoder takes (80; 128 for large-v3 and turbo)
    n_samples: int  # waveform samples per utterance, padded/trimmed: Whisper's 30 s
    sample_rate: int  # Hz the audio is resampled to
    n_fft: int  # STFT window of the log-mel
    hop_length: int  # STFT hop of the log-mel
    whisper_version: str  # the log-mel code and mel filters are this openai-whisper's
    dtype: str  # storage dtype, a key of STORAGE_DTYPES
    compute_dtype: str  # dtype the encoder ran in, a key of COMPUTE_DTYPES (float32: no autocast)
    utterances: tuple[tuple[str, str], ...]  # (id, audio as in the manifest), dataset order
    version: int = CACHE_VERSION  # the layout of this module
    view: str = AUDIO.name  # the view's name (`data/views.py`); "audio" is left out of the key
    # Rows are the input of encoder.blocks[i] (encoder_top_layers trains the blocks from i on,
    # and encoder_sha256 covers only those below); None: the encoder's output, left out of the key
    input_of_block: int | None = None

    def as_dict(self) -> dict:
        """The key as meta.json stores it and `digest` hashes it: the "audio" view without a
        `view` field and the encoder's output without `input_of_block`, so their folders are
        those made before views and trained encoder blocks existed (and reused)."""
        fields = asdict(self)
        if self.view == AUDIO.name:
            del fields["view"]
        if self.input_of_block is None:
            del fields["input_of_block"]
        return fields

    def digest(self) -> str:
        """sha256 (hex) of the whole key."""
        text = json.dumps(self.as_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


def feature_cache_key(
    model: Whisper,
    dataset: UtteranceDataset,
    dtype: str = "float16",
    *,
    compute_dtype: str = "float32",
    view: View = AUDIO,
    input_of_block: int | None = None,
) -> FeatureCacheKey:
    """The key of `dataset`'s features in `view` from `model`'s encoder run in
    `compute_dtype` (`precision.compute_dtype_name` of the fit's precision), stored as
    `dtype`; `input_of_block` i: the input of `encoder.blocks[i]` (`encoder_stem`), None:
    the encoder's output."""
    check_input_of_block(model, input_of_block)
    if dtype not in STORAGE_DTYPES:
        raise FeatureCacheError(
            f"feature cache dtype {dtype!r}: choose one of {', '.join(STORAGE_DTYPES)}."
        )
    if compute_dtype not in COMPUTE_DTYPES:
        raise FeatureCacheError(
            f"feature cache compute dtype {compute_dtype!r}: choose one of "
            f"{', '.join(COMPUTE_DTYPES)}."
        )
    return FeatureCacheKey(
        encoder_sha256=encoder_fingerprint(model, input_of_block),
        n_mels=model.dims.n_mels,
        n_samples=N_SAMPLES,
        sample_rate=SAMPLE_RATE,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        whisper_version=whisper.__version__,
        dtype=dtype,
        compute_dtype=compute_dtype,
        utterances=tuple(dataset.cache_rows()),
        view=view.name,
        input_of_block=input_of_block,
    )


def check_input_of_block(model: Whisper, input_of_block: int | None) -> None:
    """Raises `FeatureCacheError` unless `input_of_block` is None or a block index >= 1 of
    `model`'s encoder (block 0's input is the convs' output: nothing frozen worth caching)."""
    n_layers = model.dims.n_audio_layer
    if input_of_block is not None and not 1 <= input_of_block < n_layers:
        raise FeatureCacheError(
            f"input_of_block={input_of_block}: the cache stores the input of an encoder block "
            f"1 to {n_layers - 1} (the encoder has {n_layers}), or None for its output."
        )


def estimate_cache_bytes(n_utterances: int, dims: ModelDimensions, dtype: str = "float16") -> int:
    """Bytes of the features file: n_utterances × n_audio_ctx × n_audio_state × itemsize
    (the done flags add one byte per utterance, meta.json a few bytes per id)."""
    itemsize = np.dtype(dtype).itemsize
    return n_utterances * dims.n_audio_ctx * dims.n_audio_state * itemsize


def size_message(n_utterances: int, dims: ModelDimensions, dtype: str, path: str | Path) -> str:
    """`encoder-feature cache: 2,400 utterances × 1500 × 384 × 2 bytes = 2.8 GB at <path>`."""
    size = estimate_cache_bytes(n_utterances, dims, dtype)
    return (
        f"encoder-feature cache: {n_utterances:,} utterances × {dims.n_audio_ctx} × "
        f"{dims.n_audio_state} × {np.dtype(dtype).itemsize} bytes = {human_bytes(size)} "
        f"at {path}"
    )


def human_bytes(n: int) -> str:
    """Decimal units, one decimal: 2764800000 → '2.8 GB'."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class FeatureCache:
    """One cache folder: the encoder outputs of N utterances, row i for utterance i.

    Readers get rows from a copy-on-write memory map opened in each process on first use
    (DataLoader workers receive the paths, never the mapped bytes). Writers call `write`,
    then `flush` makes the rows durable and marks them done (as `build_feature_cache` does).
    """

    def __init__(self, path: Path, meta: dict) -> None:
        self.path = path  # the cache folder
        self.meta = meta  # the contents of meta.json
        self.utterances: list[tuple[str, str]] = [tuple(u) for u in meta["key"]["utterances"]]
        self.ids = [utterance_id for utterance_id, _ in self.utterances]
        self.shape: tuple[int, int, int] = tuple(meta["shape"])  # (N, n_audio_ctx, n_audio_state)
        self.dtype = np.dtype(meta["dtype"])
        # Rows are the input of encoder.blocks[i]; None: the encoder's output.
        self.input_of_block: int | None = meta["key"].get("input_of_block")
        self.features_path = path / f"features.{STORAGE_DTYPES[meta['dtype']]}"
        self.done_path = path / "done.u8"
        self._map: np.memmap | None = None
        self._writer: BinaryIO | None = None
        self._pending: list[int] = []  # rows written, not yet flushed and marked done

    @classmethod
    def open(
        cls,
        cache_dir: str | Path,
        model: Whisper,
        dataset: UtteranceDataset,
        *,
        dtype: str = "float16",
        compute_dtype: str = "float32",
        name: str | None = None,
        view: View = AUDIO,
        input_of_block: int | None = None,
    ) -> FeatureCache | None:
        """The complete cache of `dataset`'s features in `view` from `model`'s encoder run in
        `compute_dtype` (the input of `encoder.blocks[input_of_block]`; None: its output)
        under `cache_dir`, or None (never built, another key, or not finished)."""
        key = feature_cache_key(
            model, dataset, dtype, compute_dtype=compute_dtype, view=view,
            input_of_block=input_of_block,
        )  # fmt: skip
        folder = cache_folder(cache_dir, name or folder_name(dataset, view), key)
        cache = existing_cache(folder, key)
        return cache if cache is not None and cache.complete else None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        # Workers map the file themselves; a pickled memmap would copy every row.
        return {**self.__dict__, "_map": None, "_writer": None, "_pending": []}

    @property
    def feature_shape(self) -> tuple[int, int]:
        """(n_audio_ctx, n_audio_state) of one row."""
        return self.shape[1], self.shape[2]

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype.name)

    @property
    def row_bytes(self) -> int:
        return math.prod(self.feature_shape) * self.dtype.itemsize

    def done(self) -> np.ndarray:
        """(N,) bool, read from disk: True for rows stored (by this or any other process)."""
        return np.fromfile(self.done_path, dtype=np.uint8).astype(bool)

    @property
    def complete(self) -> bool:
        return bool(self.done().all())

    @property
    def missing_ids(self) -> list[str]:
        """Ids of the rows not stored yet, in dataset order."""
        return [self.ids[row] for row in np.flatnonzero(~self.done())]

    def features(self, row: int) -> torch.Tensor:
        """Row `row` as a view of the memory map (no copy; stacking a batch copies).

        returns : torch.Tensor, shape = (n_audio_ctx, n_audio_state), the storage dtype
        """
        if self._map is None:
            # "c": writable arrays (torch.from_numpy warns on read-only ones); nothing written
            # to them reaches the file.
            self._map = np.memmap(self.features_path, self.dtype, mode="c", shape=self.shape)
        return torch.from_numpy(self._map[row])

    def write(self, rows: list[int], features: torch.Tensor) -> None:
        """Store encoder outputs for `rows`; they count as done after the next `flush`.

        features : torch.Tensor, shape = (len(rows), n_audio_ctx, n_audio_state), any float
            dtype and device
        """
        if tuple(features.shape) != (len(rows), *self.feature_shape):
            raise ValueError(
                f"features of shape {tuple(features.shape)} for {len(rows)} rows; the cache "
                f"{self.path} stores rows of {self.feature_shape}."
            )
        stored = features.detach().to(self.torch_dtype).cpu().numpy()
        if self._writer is None:
            self._writer = self.features_path.open("r+b")
        for row, data in zip(rows, stored, strict=True):
            self._writer.seek(row * self.row_bytes)
            self._writer.write(data.tobytes())
        self._pending.extend(rows)

    def flush(self) -> None:
        """Make written rows durable, then mark them done; `complete` in meta.json once every
        row is. Rows written after the last flush are computed again after a crash."""
        if not self._pending:
            return
        self._writer.flush()
        os.fsync(self._writer.fileno())
        with self.done_path.open("r+b") as f:  # byte per row: writers of other rows are safe
            for row in self._pending:
                f.seek(row)
                f.write(b"\x01")
            f.flush()
            os.fsync(f.fileno())
        self._pending = []
        if self.complete and not self.meta["complete"]:
            self.meta["complete"] = True
            _write_meta(self.path, self.meta)

    def close(self) -> None:
        """Flush, then close the file written to (reading goes on)."""
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def folder_name(dataset: UtteranceDataset, view: View = AUDIO) -> str:
    """The cache folder's name before the digest: the manifest's stem, then the view's slug
    unless it is "audio" (`train`, `train-mel`, `train-noise10`)."""
    stem = dataset.manifest.stem
    return stem if view == AUDIO else f"{stem}-{view.slug}"


def cache_folder(cache_dir: str | Path, name: str, key: FeatureCacheKey) -> Path:
    """`<cache_dir>/<name>-<first 16 hex digits of the key's digest>`."""
    return Path(cache_dir) / f"{name}-{key.digest()[:16]}"


def _write_meta(folder: Path, meta: dict) -> None:
    with atomic_write(folder / "meta.json") as tmp:
        tmp.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")


def existing_cache(folder: Path, key: FeatureCacheKey) -> FeatureCache | None:
    """The cache in `folder` if it was made for `key` and its files have their sizes."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("key_sha256") != key.digest():
            return None
        cache = FeatureCache(folder, meta)
        sizes_ok = cache.features_path.stat().st_size == len(cache) * cache.row_bytes
        if not sizes_ok or cache.done_path.stat().st_size != len(cache):
            return None
    except (OSError, ValueError, KeyError, TypeError):  # absent, or not written by this code
        return None
    return cache


def new_cache(folder: Path, key: FeatureCacheKey, dims: ModelDimensions) -> FeatureCache:
    """A new, empty cache for `key` in `folder`, replacing whatever was there. The data files
    come first: meta.json exists only once they do. Call it under `build_lock`:
    it zeroes rows another builder may have marked done."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").unlink(missing_ok=True)
    n = len(key.utterances)
    meta = {
        "version": CACHE_VERSION,
        "key_sha256": key.digest(),
        "shape": [n, dims.n_audio_ctx, dims.n_audio_state],
        "dtype": key.dtype,
        "compute_dtype": key.compute_dtype,
        "complete": False,
        "key": key.as_dict(),
    }
    cache = FeatureCache(folder, meta)
    with atomic_write(cache.done_path) as tmp:
        tmp.write_bytes(bytes(n))
    with cache.features_path.open("wb") as f:  # sparse where the file system allows
        f.truncate(estimate_cache_bytes(n, dims, key.dtype))
    _write_meta(folder, meta)
    return cache


FLUSH_EVERY_S = 30.0  # a killed build loses at most this much work
MAX_LISTED_IDS = 10  # ids named in a warning about rows that could not be cached


def refuse_with_augmentation(
    waveform_augment: WaveformAugment | None,
    spec_augment: SpecAugment | None = None,
    *,
    freeze_encoder: bool = True,
) -> None:
    """Raise FeatureCacheError when cached features would not be what training computes:
    augmentation on (the cache holds the encoder's output for un-augmented audio) or an
    encoder that trains (its output changes every step). None: that augmentation is off."""
    on = []
    if waveform_augment is not None and waveform_augment.enabled:
        on.append("waveform augmentation (--data.augment.speed_prob/volume_prob/noise_prob)")
    if spec_augment is not None and spec_augment.enabled:
        on.append("SpecAugment (--model.spec_augment.prob)")
    if on:
        raise FeatureCacheError(
            f"the encoder-feature cache holds the encoder's output for un-augmented audio, but "
            f"{' and '.join(on)} {'are' if len(on) > 1 else 'is'} on: augmented audio needs a "
            "new encoder pass every time. Set those probabilities to 0, or train without the "
            "feature cache."
        )
    if not freeze_encoder:
        raise FeatureCacheError(
            "the encoder-feature cache needs a frozen encoder (--model.freeze_encoder true): "
            "an encoder that trains changes its output every step. Freeze it, or train "
            "without the feature cache."
        )


class _Rows(Dataset):
    """(row, item) for the rows of `dataset` still to compute, the item's audio in `view`
    (noise added, speed changed: in the worker, as audio is read)."""

    def __init__(self, dataset: UtteranceDataset, rows: np.ndarray, view: View = AUDIO) -> None:
        self.dataset, self.rows, self.view = dataset, rows, view

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[int, dict]:
        row = int(self.rows[index])
        item = self.dataset[row]
        if "error" not in item and self.view != AUDIO:
            item["audio"] = view_waveform(item["audio"], self.view, item["id"])
        return row, item


def _collate_audio(
    pairs: list[tuple[int, dict]],
) -> tuple[list[int], torch.Tensor, torch.Tensor, list[str]]:
    """Rows, their waveforms padded/trimmed to 30 s as `Collator` pads them (B, N_SAMPLES),
    their real samples (B,) int64, and the ids of unreadable items."""
    readable = [(row, item) for row, item in pairs if "error" not in item]
    audio = np.zeros((len(readable), N_SAMPLES), np.float32)
    for i, (_, item) in enumerate(readable):
        audio[i] = whisper.pad_or_trim(item["audio"], N_SAMPLES)
    lengths = torch.tensor([min(len(item["audio"]), N_SAMPLES) for _, item in readable])
    unreadable = [item["id"] for _, item in pairs if "error" in item]
    return [row for row, _ in readable], torch.from_numpy(audio), lengths, unreadable


def build_feature_cache(
    model: Whisper,
    dataset: UtteranceDataset,
    cache_dir: str | Path,
    *,
    dtype: str = "float16",
    name: str | None = None,
    device: str | torch.device | None = None,
    precision: str | None = None,
    batch_size: int = 16,
    num_workers: int = 2,
    progress: bool = True,
    rebuild: bool = False,
    flush_every_s: float = FLUSH_EVERY_S,
    view: View = AUDIO,
    input_of_block: int | None = None,
) -> FeatureCache:
    """Store the encoder output of every utterance of `dataset` in `view` (`data/views.py`;
    one folder per view, the "audio" one as before views existed), or of those not stored
    yet; returns the cache (complete unless some audio could not be read).

    Prints the cache's size (estimate_cache_bytes) before computing anything. DataLoader
    workers read audio; the log-mel (log_mel_batch) and the encoder run on `device` (None:
    the encoder's) under inference mode, the encoder in the dtype a Trainer with `precision`
    computes it in (`precision.precision_compute_dtype`: float32 without autocast, else
    autocast in bfloat16 or float16), which is part of the key. An unreadable utterance
    leaves its row not done (the DataLoader then skips it) and is named in a warning.
    `rebuild` starts afresh (audio changed in place).

    Args:
        dtype: storage dtype, float16 (half the disk of float32; see the module's docstring).
        name: the folder's name before the key digest; None: the manifest's stem (and the
            view's slug, `folder_name`).
        precision: the fit's `trainer.precision` ("32-true", "bf16-mixed", …); None: the
            Trainer's default, `precision.default_precision()`.
        input_of_block: store the input of `encoder.blocks[i]` (`encoder_stem`), for a fit
            whose encoder trains the blocks from i on (`encoder_top_layers`); None: the
            encoder's output.
    """
    refuse_with_augmentation(dataset.augment)
    if not len(dataset):
        raise FeatureCacheError(f"{dataset.manifest}: no utterances to cache.")
    device = torch.device(device) if device is not None else _device_of(model.encoder)
    compute_dtype = compute_dtype_name(precision, device)
    key = feature_cache_key(
        model, dataset, dtype, compute_dtype=compute_dtype, view=view,
        input_of_block=input_of_block,
    )  # fmt: skip
    folder = cache_folder(cache_dir, name or folder_name(dataset, view), key)
    with build_lock(folder, progress):
        return _build(model, dataset, folder, key, dtype, device, batch_size, num_workers,
                      progress, rebuild, flush_every_s, view)  # fmt: skip


@contextmanager
def build_lock(folder: Path, progress: bool = True) -> Iterator[None]:
    """Holds an exclusive lock (`fcntl.flock` on `.<folder name>.lock` beside it) while one
    process builds the cache in `folder`: a second builder (another fit, a DDP rank, a node
    sharing the disk) waits, without a time limit, then finds the rows done. Without it, one
    builder's `new_cache` could zero the rows another had marked done."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f".{folder.name}.lock").open("a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"encoder-feature cache {folder}: another process builds it, waiting",
                      flush=True)  # fmt: skip
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(
    model: Whisper,
    dataset: UtteranceDataset,
    folder: Path,
    key: FeatureCacheKey,
    dtype: str,
    device: torch.device,
    batch_size: int,
    num_workers: int,
    progress: bool,
    rebuild: bool,
    flush_every_s: float,
    view: View,
) -> FeatureCache:
    """`build_feature_cache`'s work, under `build_lock`."""
    cache = None if rebuild else existing_cache(folder, key)
    todo = np.arange(len(dataset)) if cache is None else np.flatnonzero(~cache.done())
    if not len(todo):
        if progress:
            print(
                f"encoder-feature cache {folder}: complete ({len(cache):,} utterances), reused",
                flush=True,
            )
        return cache
    if progress:
        message = size_message(len(dataset), model.dims, dtype, folder)
        if view != AUDIO:
            message += f" (view {view.name}: one more encoder pass per utterance)"
        if key.input_of_block is not None:
            message += f" (the input of encoder block {key.input_of_block}: the blocks above train)"
        if len(todo) < len(dataset):
            message += f"; resuming: {len(todo):,} utterances left to compute"
        print(message, flush=True)
    _check_free_space(folder, estimate_cache_bytes(len(todo), model.dims, dtype))
    cache = cache or new_cache(folder, key, model.dims)

    loader = DataLoader(
        _Rows(dataset, todo, view),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate_audio,
        pin_memory=device.type == "cuda",
    )
    start = time.monotonic()
    bar = tqdm(total=len(todo), desc=f"caching {folder.name}", unit="utt", disable=not progress)
    try:
        compute_dtype = COMPUTE_DTYPES[key.compute_dtype]
        unreadable = _encode_rows(
            model, loader, cache, device, compute_dtype, bar, flush_every_s, view,
            key.input_of_block,
        )  # fmt: skip
    finally:
        bar.close()
        cache.close()  # whatever was computed is kept, also on an error or Ctrl-C
    seconds = time.monotonic() - start
    if unreadable:
        _warn_unreadable(dataset.manifest, unreadable)
    if progress:
        computed = len(todo) - len(unreadable)
        print(
            f"encoder-feature cache {folder}: {computed:,} utterances computed in "
            f"{seconds:.1f} s ({seconds / max(computed, 1):.3f} s each), "
            + ("complete" if cache.complete else f"{len(cache.missing_ids):,} missing"),
            flush=True,
        )
    return cache


def _encode_rows(
    model: Whisper,
    loader: DataLoader,
    cache: FeatureCache,
    device: torch.device,
    compute_dtype: torch.dtype,
    bar: tqdm,
    flush_every_s: float,
    view: View = AUDIO,
    input_of_block: int | None = None,
) -> list[str]:
    """Encode and write every batch of `loader` (rows, audio, lengths, unreadable ids), the
    log-mel padded as `view` pads it, the encoder (up to the input of `blocks[input_of_block]`;
    None: all of it) under autocast in `compute_dtype` (float32: none); flush every
    `flush_every_s` seconds. Returns the unreadable ids."""
    encoder = _encoder_on(model, device)
    was_training = encoder.training
    encoder.eval()
    mixed = compute_dtype is not torch.float32
    autocast = torch.autocast(device.type, dtype=compute_dtype, enabled=mixed)
    unreadable: list[str] = []
    last_flush = time.monotonic()
    try:
        with torch.inference_mode():
            for rows, audio, lengths, skipped in loader:
                unreadable += skipped
                if rows:
                    # The log-mel in float32, as Whisper computes it; autocast would run its
                    # mel-filter matmul in 16 bits. The encoder runs as mixed precision trains.
                    audio = audio.to(device, non_blocking=True)
                    mel = view_mel_batch(audio, lengths, view, model.dims.n_mels)
                    with autocast:
                        if input_of_block is None:
                            features = encoder(mel)
                        else:
                            features = encoder_stem(encoder, mel, input_of_block)
                    cache.write(rows, features)
                if time.monotonic() - last_flush > flush_every_s:
                    cache.flush()
                    last_flush = time.monotonic()
                bar.update(len(rows) + len(skipped))
    finally:
        encoder.train(was_training)
    return unreadable


def _warn_unreadable(manifest: Path, unreadable: list[str]) -> None:
    listed = ", ".join(unreadable[:MAX_LISTED_IDS])
    more = len(unreadable) - MAX_LISTED_IDS
    warnings.warn(
        f"{manifest}: {len(unreadable)} utterances not cached, their audio could not be read: "
        f"{listed}{f' and {more} more' if more > 0 else ''}. Training skips them; fix the files "
        "(check-data lists them) and build again to add them.",
        stacklevel=3,
    )


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _encoder_on(model: Whisper, device: torch.device) -> torch.nn.Module:
    """The model's encoder if it is on `device`, else a copy there (the model stays as it is,
    e.g. training on another device)."""
    if _device_of(model.encoder) == device:
        return model.encoder
    return copy.deepcopy(model.encoder).to(device)


def _check_free_space(folder: Path, needed: int) -> None:
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise FeatureCacheError(
            f"{folder}: the encoder-feature cache needs {human_bytes(needed)} more, but only "
            f"{human_bytes(free)} are free there. Choose a cache folder on a larger disk, or "
            "delete old caches (folders named <manifest>-<digest>) in it."
        )


class CachedFeatures:
    """The input strategy (`data/inputs.py`) of the encoder-feature cache: each item's
    encoder output read from `cache` in place of its audio (no audio is read).

    An item gets `"features": torch.Tensor (n_audio_ctx, n_audio_state)` in the storage dtype
    and `"duration"` (the manifest's, which check-data fills), or `{"error"}` for a row the
    cache lacks (its audio could not be read when the cache was built). A batch gets

    | `features`    | (B, n_audio_ctx, n_audio_state) | the cache's dtype (float16)          |
    | `durations_s` | (B,)                            | float32, the items' durations (0: unknown) |
    | `features_block` | int                          | only for a cache of the input of      |
    |               |                                 | `encoder.blocks[i]` (`input_of_block`): i |

    in place of `audio` and `audio_lengths`; without `features_block`, `features` are the
    encoder's output. A `speed:f` view's durations are the manifest's
    divided by f (decoding's budget follows the audio the encoder saw). Cast `features` on
    the device before use: `.float()` for the decoder (autocast then picks the compute dtype)
    and for decoding on the CPU; decoding with fp16 on CUDA halves it itself.
    """

    def __init__(self, cache: FeatureCache, dataset: UtteranceDataset, view: View = AUDIO) -> None:
        if dataset.cache_rows() != cache.utterances:
            raise FeatureCacheError(
                f"{cache.path} was built for other utterances than {dataset.manifest} holds "
                "now (ids, audio paths or their order differ); build the cache for it again."
            )
        self.cache = cache
        self.view = view  # the view the cache holds (`data/views.py`)
        self.stored = cache.done()  # (N,) bool, read once

    def item(self, dataset: UtteranceDataset, index: int) -> dict:
        if not self.stored[index]:
            return {
                "error": f"not in the encoder-feature cache {self.cache.path}: its audio could "
                "not be read when the cache was built"
            }
        return {
            "features": self.cache.features(index),
            "duration": dataset.durations_s[index] / self.view.speed,
        }

    def batch(self, items: list[dict]) -> dict[str, torch.Tensor]:
        features = (
            torch.stack([item["features"] for item in items])
            if items
            else torch.zeros((0, *self.cache.feature_shape), dtype=self.cache.torch_dtype)
        )
        durations = [item.get("duration") or 0.0 for item in items]
        batch = {"features": features, "durations_s": torch.tensor(durations, dtype=torch.float32)}
        if self.cache.input_of_block is not None:
            batch["features_block"] = self.cache.input_of_block
        return batch


def cached(
    dataset: UtteranceDataset, collator: Collator, cache: FeatureCache
) -> tuple[UtteranceDataset, Collator]:
    """`dataset` and `collator` reading `cache` in place of the audio (`CachedFeatures`)."""
    inputs = CachedFeatures(cache, dataset)
    return dataset.with_inputs(inputs), collator.with_inputs(inputs)


# The last entry of a view draw's seed, (seed, epoch, index, VIEW_STREAM): without it, items 0
# and 1 drew from the sampler's own (seed, epoch, 0 or 1) streams (`data.windows.CHOICE_STREAM`).
VIEW_STREAM = 4


class SampledViews(Dataset):
    """A training dataset whose items each read one of K cached views of the utterance
    (`cache_views`), drawn uniformly from `(seed, epoch, index, VIEW_STREAM)`: deterministic,
    the same in every DataLoader worker, and the same after a resume (the sampler's state holds
    its seed and epoch).

    Indexed by the `(index, seed, epoch)` triples of a `BucketingBatchSampler(tag_items=True)`;
    a plain index reads the first view. Items are `dataset`'s with `features` from the drawn
    view's cache (and `"view"`: its name); a `dataset` whose items depend on the epoch too
    (`takes_tagged_items`: packed windows) is handed the same key, so its choices are the ones
    it makes unwrapped. `tokens`, `durations_s`, `utterances`, `targets` and `manifest` are
    `dataset`'s, which the sampler and the collator read.
    """

    takes_tagged_items = True  # the view depends on (seed, epoch): train with tag_items=True

    def __init__(
        self, dataset: UtteranceDataset, caches: list[FeatureCache], views: list[View]
    ) -> None:
        if len(caches) != len(views) or not views:
            raise ValueError(f"{len(views)} views need as many caches, got {len(caches)}")
        self.views = views
        self.parts = [
            dataset.with_inputs(CachedFeatures(cache, dataset, view))
            for cache, view in zip(caches, views, strict=True)
        ]
        self.inputs = self.parts[0].inputs  # stacks every view's items alike
        self.manifest = dataset.manifest
        self.utterances, self.targets = dataset.utterances, dataset.targets
        self.tokens, self.durations_s = dataset.tokens, dataset.durations_s
        self._cache_rows = dataset.cache_rows()
        self._forward_key = getattr(dataset, "takes_tagged_items", False)

    def cache_rows(self) -> list[tuple[str, str]]:
        return self._cache_rows

    @property
    def augment(self) -> None:
        """Cached views take no waveform augmentation."""
        return None

    def __len__(self) -> int:
        return len(self.parts[0])

    def view_of(self, index: int, seed: int, epoch: int) -> int:
        """Which view item `index` reads in `epoch` of a run seeded `seed` (an index into
        `views`)."""
        if len(self.views) == 1:
            return 0
        rng = np.random.default_rng((seed, epoch, index, VIEW_STREAM))
        return int(rng.integers(len(self.views)))

    def __getitem__(self, key: ItemKey) -> dict:
        index, seed, epoch = untag(key, 0)  # a plain index draws nothing: its seed is unused
        view = self.view_of(index, seed, epoch) if isinstance(key, tuple) else 0
        item = self.parts[view][key if self._forward_key else index]
        if "error" not in item:
            item["view"] = self.views[view].name
        return item


def cached_views(
    dataset: UtteranceDataset,
    collator: Collator,
    caches: list[FeatureCache],
    views: list[View],
) -> tuple[SampledViews, Collator]:
    """`dataset` and `collator` reading one of `caches` (one per view, in order) per item
    (`SampledViews`); batch it with `BucketingBatchSampler(tag_items=True)`."""
    sampled = SampledViews(dataset, caches, views)
    return sampled, collator.with_inputs(sampled.inputs)
