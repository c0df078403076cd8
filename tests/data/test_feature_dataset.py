"""The encoder-feature store read for training: items and batches equal to the audio path's,
the same decoder loss and decoding; the dataset must be the cache's; workers map it."""

import pickle

import pytest
import torch
import whisper
from feature_helpers import (
    LOSS_RTOL,
    build,
    sine_fixtures,
)

from whisper_ft.data.collate import Collator
from whisper_ft.data.dataset import UtteranceDataset
from whisper_ft.data.feature_cache import CachedFeatures, FeatureCacheError
from whisper_ft.training.module import token_loss

manifest, dataset, model = sine_fixtures()


def test_decoder_loss_and_decoding_from_cached_features_equal_live_ones(micro, dataset, tmp_path):
    model = micro.model
    collator = Collator(eot=micro.tokenizer.eot, n_text_ctx=model.dims.n_text_ctx)
    live_batch = collator([dataset[i] for i in range(4)])
    with torch.no_grad():
        live = micro.encode(live_batch["audio"])
        live_loss = token_loss(
            model.decoder(live_batch["dec_input_ids"], live), live_batch["labels"]
        ).item()
        # Each utterance given another's features: the loss moves by 6e-6 (relative), so the
        # tolerance below tells right rows from wrong ones.
        swapped = model.decoder(live_batch["dec_input_ids"], live.roll(1, dims=0))
        assert token_loss(swapped, live_batch["labels"]).item() != pytest.approx(
            live_loss, rel=LOSS_RTOL
        )
    batches = {}
    for dtype in ("float16", "float32"):
        cache = build(model, dataset, tmp_path / "cache", dtype=dtype)
        inputs = CachedFeatures(cache, dataset)
        items = dataset.with_inputs(inputs)
        batch = collator.with_inputs(inputs)([items[i] for i in range(4)])
        assert set(batch) == set(live_batch) - {"audio", "audio_lengths"} | {"features"}
        for name in ("dec_input_ids", "labels"):
            assert torch.equal(batch[name], live_batch[name])
        for name in ("ids", "texts", "skipped", "target"):
            assert batch[name] == live_batch[name]
        assert batch["features"].shape == (4, 1500, 64)
        assert batch["features"].dtype == getattr(torch, dtype)
        with torch.no_grad():
            logits = model.decoder(batch["dec_input_ids"], batch["features"].float())
        # Measured: the same float32 loss to the last bit, from float16 and float32 storage.
        assert token_loss(logits, batch["labels"]).item() == pytest.approx(live_loss, rel=LOSS_RTOL)
        batches[dtype] = batch
    # Decoding takes the cached rows as encoder output (float32 on the CPU: fp16=False).
    options = whisper.DecodingOptions(
        language="ja", without_timestamps=True, fp16=False, sample_len=8
    )
    cached = model.decode(batches["float16"]["features"].float(), options)
    assert [r.text for r in cached] == [r.text for r in model.decode(live, options)]


def test_the_dataset_must_be_the_one_the_cache_was_built_for(
    model, dataset, ja_tokenizer, tmp_path
):
    cache = build(model, dataset, tmp_path / "cache")
    reordered = UtteranceDataset(dataset.utterances[::-1], dataset.manifest, ja_tokenizer)
    with pytest.raises(FeatureCacheError, match="other utterances than .*train.jsonl holds"):
        CachedFeatures(cache, reordered)


def test_workers_receive_the_cache_without_its_rows(model, dataset, tmp_path):
    cache = build(model, dataset, tmp_path / "cache")
    inputs = CachedFeatures(cache, dataset)
    items = dataset.with_inputs(inputs)
    first = items[0]["features"]  # maps the file in this process
    assert len(pickle.dumps(items)) < first.numel() * first.element_size()
    loader = torch.utils.data.DataLoader(
        items,
        batch_size=2,
        num_workers=2,
        collate_fn=Collator(eot=50257, inputs=inputs),
    )
    stacked = torch.cat([batch["features"] for batch in loader])
    assert torch.equal(stacked, torch.stack([cache.features(i) for i in range(4)]))
