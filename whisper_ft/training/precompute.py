"""The `cache` command's job: a model loaded from any source, each manifest checked as training
checks it, and the encoder output of its usable utterances stored in the feature cache.

    cache_manifests("base", ["train.jsonl"], "cache/features")   # True: every row stored

It joins the models room (loading) and the data room (check, dataset, cache), so it lives here,
above both.
"""

from pathlib import Path
from typing import Literal

import torch
from whisper.tokenizer import get_tokenizer

from whisper_ft.data.check import check_manifest
from whisper_ft.data.dataset import UtteranceDataset
from whisper_ft.data.feature_cache import build_feature_cache
from whisper_ft.manifest import Target
from whisper_ft.models.loading import load_base_model


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
