"""Building the encoder-feature store: one encoder pass over a dataset, one builder at a time.

    cache = build_feature_cache(model, dataset, "cache/features")  # prints its size first
    cache_manifests("base", ["train.jsonl"], "cache/features")      # the `cache` command

Owns the encoder pass (DataLoader workers read audio; the log-mel and the encoder run on the
device under inference mode, the encoder in the fit's precision), the file lock that lets one
process build while the others wait (fits sharing a folder, DDP ranks, nodes sharing a disk),
resuming an interrupted build from the rows done, and the refusal of settings under which stored
features would not be what training computes. What is stored, and how, is `features`'.
"""

from __future__ import annotations

import copy
import fcntl
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import whisper
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm
from whisper.audio import N_SAMPLES
from whisper.model import Whisper
from whisper.tokenizer import get_tokenizer

from whisper_ft.audio import log_mel_batch
from whisper_ft.augment import SpecAugment, WaveformAugment
from whisper_ft.check import check_manifest
from whisper_ft.dataset import UtteranceDataset
from whisper_ft.features import (
    FeatureCache,
    FeatureCacheError,
    FeatureCacheKey,
    cache_folder,
    estimate_cache_bytes,
    existing_cache,
    feature_cache_key,
    human_bytes,
    new_cache,
    size_message,
)
from whisper_ft.manifest import Target
from whisper_ft.model import load_base_model
from whisper_ft.precision import COMPUTE_DTYPES, compute_dtype_name

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
    """(row, item) for the rows of `dataset` still to compute."""

    def __init__(self, dataset: UtteranceDataset, rows: np.ndarray) -> None:
        self.dataset, self.rows = dataset, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[int, dict]:
        row = int(self.rows[index])
        return row, self.dataset[row]


def _collate_audio(pairs: list[tuple[int, dict]]) -> tuple[list[int], torch.Tensor, list[str]]:
    """Rows, their waveforms padded/trimmed to 30 s as `Collator` pads them (B, N_SAMPLES),
    and the ids of unreadable items."""
    readable = [(row, item) for row, item in pairs if "error" not in item]
    audio = np.zeros((len(readable), N_SAMPLES), np.float32)
    for i, (_, item) in enumerate(readable):
        audio[i] = whisper.pad_or_trim(item["audio"], N_SAMPLES)
    unreadable = [item["id"] for _, item in pairs if "error" in item]
    return [row for row, _ in readable], torch.from_numpy(audio), unreadable


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
) -> FeatureCache:
    """Store the encoder output of every utterance of `dataset`, or of those not stored yet;
    returns the cache (complete unless some audio could not be read).

    Prints the cache's size (estimate_cache_bytes) before computing anything. DataLoader
    workers read audio; the log-mel (log_mel_batch) and the encoder run on `device` (None:
    the encoder's) under inference mode, the encoder in the dtype a Trainer with `precision`
    computes it in (`precision.precision_compute_dtype`: float32 without autocast, else
    autocast in bfloat16 or float16), which is part of the key. An unreadable utterance
    leaves its row not done (the DataLoader then skips it) and is named in a warning.
    `rebuild` starts afresh (audio changed in place).

    Args:
        dtype: storage dtype, float16 (half the disk of float32; see the module's docstring).
        name: the folder's name before the key digest; None: the manifest's stem.
        precision: the fit's `trainer.precision` ("32-true", "bf16-mixed", …); None: the
            Trainer's default, `precision.default_precision()`.
    """
    refuse_with_augmentation(dataset.augment)
    if not len(dataset):
        raise FeatureCacheError(f"{dataset.manifest}: no utterances to cache.")
    device = torch.device(device) if device is not None else _device_of(model.encoder)
    compute_dtype = compute_dtype_name(precision, device)
    key = feature_cache_key(model, dataset, dtype, compute_dtype=compute_dtype)
    folder = cache_folder(cache_dir, name or dataset.manifest.stem, key)
    with build_lock(folder, progress):
        return _build(model, dataset, folder, key, dtype, device, batch_size, num_workers,
                      progress, rebuild, flush_every_s)  # fmt: skip


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
        if len(todo) < len(dataset):
            message += f"; resuming: {len(todo):,} utterances left to compute"
        print(message, flush=True)
    _check_free_space(folder, estimate_cache_bytes(len(todo), model.dims, dtype))
    cache = cache or new_cache(folder, key, model.dims)

    loader = DataLoader(
        _Rows(dataset, todo),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate_audio,
        pin_memory=device.type == "cuda",
    )
    start = time.monotonic()
    bar = tqdm(total=len(todo), desc=f"caching {folder.name}", unit="utt", disable=not progress)
    try:
        compute_dtype = COMPUTE_DTYPES[key.compute_dtype]
        unreadable = _encode_rows(model, loader, cache, device, compute_dtype, bar, flush_every_s)
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
) -> list[str]:
    """Encode and write every batch of `loader` (rows, audio, unreadable ids), the encoder
    under autocast in `compute_dtype` (float32: none); flush every `flush_every_s` seconds.
    Returns the unreadable ids."""
    encoder = _encoder_on(model, device)
    was_training = encoder.training
    encoder.eval()
    mixed = compute_dtype is not torch.float32
    autocast = torch.autocast(device.type, dtype=compute_dtype, enabled=mixed)
    unreadable: list[str] = []
    last_flush = time.monotonic()
    try:
        with torch.inference_mode():
            for rows, audio, skipped in loader:
                unreadable += skipped
                if rows:
                    # The log-mel in float32, as Whisper computes it; autocast would run its
                    # mel-filter matmul in 16 bits. The encoder runs as mixed precision trains.
                    mel = log_mel_batch(audio.to(device, non_blocking=True), model.dims.n_mels)
                    with autocast:
                        features = encoder(mel)
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


def cache_manifests(
    model: str,
    manifests: list[str],
    out: str | Path,
    *,
    batch_size: int = 16,
    device: str | None = None,
    workers: int = 2,
    dtype: Literal["float16", "float32"] = "float16",
    precision: str | None = None,
    target: Target | None = None,
    rebuild: bool = False,
) -> bool:
    """Store `model`'s encoder output for every usable utterance of each manifest, one
    folder each under `out` (the `cache` command). Each manifest first goes through the same
    data check as training (`target`: the one training uses; None: the lines' own, else kana).
    `device`: None is cuda if available. `precision`: the `--trainer.precision` of the fit
    that will read the cache (None: its default), whose compute dtype keys the cache.
    Returns True if every utterance was cached."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    whisper_model = load_base_model(model, device)
    # The language does not change which lines fit the decoder: every SOT prefix is as long.
    tokenizer = get_tokenizer(
        whisper_model.is_multilingual,
        num_languages=whisper_model.num_languages,
        language="ja",
        task="transcribe",
    )
    complete = True
    for manifest in manifests:
        result = check_manifest(
            manifest, target=target, tokenizer=tokenizer, n_text_ctx=whisper_model.dims.n_text_ctx
        )
        print(result.summary(), flush=True)
        result.require_usable()
        dataset = UtteranceDataset(result.utterances, result.manifest, tokenizer, result.target)
        cache = build_feature_cache(
            whisper_model,
            dataset,
            out,
            dtype=dtype,
            device=device,
            precision=precision,
            batch_size=batch_size,
            num_workers=workers,
            progress=True,
            rebuild=rebuild,
        )
        complete = complete and cache.complete
    return complete
