"""The encoder-feature store: its key, its folders, rows written and read; sizes."""

import json
import pickle
from dataclasses import replace

import pytest
import torch
import whisper
from feature_helpers import (
    BATCH_ATOL,
    FP16_RTOL,
    build,
    count_rows,
    sine_fixtures,
)
from whisper.model import Whisper

from whisper_ft.audio import log_mel_batch
from whisper_ft.data.collate import Collator
from whisper_ft.data.dataset import UtteranceDataset
from whisper_ft.data.feature_cache import (
    CachedFeatures,
    FeatureCache,
    FeatureCacheError,
    FeatureCacheKey,
    cache_folder,
    encoder_fingerprint,
    encoder_stem,
    estimate_cache_bytes,
    existing_cache,
    feature_cache_key,
    new_cache,
    size_message,
)
from whisper_ft.models.loading import RANDOM_DIMS

manifest, dataset, model = sine_fixtures()


def test_one_changed_encoder_weight_invalidates_the_cache(model, dataset, tmp_path):
    cache = build(model, dataset, tmp_path / "cache")
    with torch.no_grad():
        model.encoder.blocks[1].mlp[0].weight[0, 0] += 1e-3
    assert FeatureCache.open(tmp_path / "cache", model, dataset) is None
    rows = count_rows(model)
    rebuilt = build(model, dataset, tmp_path / "cache")
    assert rows == [3, 1] and rebuilt.path != cache.path
    assert not torch.equal(rebuilt.features(0), cache.features(0))
    assert cache.complete  # the other weights' cache is left alone


def test_a_changed_setting_or_utterance_list_invalidates_the_cache(
    model, dataset, ja_tokenizer, tmp_path
):
    cache_dir = tmp_path / "cache"
    build(model, dataset, cache_dir)
    assert FeatureCache.open(cache_dir, model, dataset) is not None
    assert FeatureCache.open(cache_dir, model, dataset, dtype="float32") is None
    fewer = UtteranceDataset(dataset.utterances[1:], dataset.manifest, ja_tokenizer, "kana")
    assert FeatureCache.open(cache_dir, model, fewer) is None
    moved = [replace(u, audio=f"other/{u.audio}") for u in dataset.utterances]
    assert (
        FeatureCache.open(
            cache_dir, model, UtteranceDataset(moved, dataset.manifest, ja_tokenizer, "kana")
        )
        is None
    )

    rows = count_rows(model)
    as_float32 = build(model, dataset, cache_dir, dtype="float32")
    assert rows == [3, 1] and (as_float32.path / "features.f32").is_file()
    assert as_float32.features(0).dtype == torch.float32
    assert len(list(cache_dir.glob("[!.]*"))) == 2  # one folder per key (and its lock file)


def test_the_key_covers_n_mels_and_head_count_besides_the_weights(model, dataset):
    key = feature_cache_key(model, dataset)
    assert key.n_mels == 80 and key.dtype == "float16" and key.n_samples == 480000
    assert key.utterances == tuple((f"u{i}", f"wav/u{i}.wav") for i in range(4))
    v3_like = Whisper(replace(RANDOM_DIMS["micro"], n_mels=128))
    assert feature_cache_key(v3_like, dataset).n_mels == 128
    assert feature_cache_key(v3_like, dataset).digest() != key.digest()
    # Same tensors, shapes and bytes, another head count: the encoder computes otherwise.
    other_heads = Whisper(replace(RANDOM_DIMS["micro"], n_audio_head=4))
    other_heads.load_state_dict(model.state_dict())
    assert encoder_fingerprint(other_heads) != encoder_fingerprint(model)
    assert encoder_fingerprint(model) == encoder_fingerprint(model)
    assert feature_cache_key(model, dataset, "float32").digest() != key.digest()
    with pytest.raises(FeatureCacheError, match="choose one of float16, float32"):
        feature_cache_key(model, dataset, "bfloat16")


def test_keys_differing_only_in_compute_dtype_name_different_folders(model, dataset, tmp_path):
    keys = {name: feature_cache_key(model, dataset, compute_dtype=name) for name in
            ("float32", "bfloat16", "float16")}  # fmt: skip
    assert feature_cache_key(model, dataset).compute_dtype == "float32"
    assert {key.dtype for key in keys.values()} == {"float16"}  # stored alike, computed not
    folders = {cache_folder(tmp_path, "train", key) for key in keys.values()}
    assert len(folders) == 3
    folder = cache_folder(tmp_path, "train", keys["bfloat16"])
    new_cache(folder, keys["bfloat16"], model.dims)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["compute_dtype"] == meta["key"]["compute_dtype"] == "bfloat16"
    assert existing_cache(folder, keys["bfloat16"]) is not None
    assert existing_cache(folder, keys["float32"]) is None  # a bf16 build is no fp32 one
    with pytest.raises(FeatureCacheError, match="choose one of float32, bfloat16, float16"):
        feature_cache_key(model, dataset, compute_dtype="float64")


def test_size_estimate_and_message():
    tiny, base, small = (RANDOM_DIMS[s] for s in ("tiny", "base", "small"))
    assert estimate_cache_bytes(1, tiny) == 1500 * 384 * 2 == 1_152_000
    assert estimate_cache_bytes(1, base) == 1_536_000
    assert estimate_cache_bytes(1, small) == 2_304_000
    assert estimate_cache_bytes(1, RANDOM_DIMS["large-v3"]) == 3_840_000
    assert estimate_cache_bytes(1, tiny, "float32") == 2_304_000
    assert estimate_cache_bytes(2400, tiny) == 2_764_800_000
    assert size_message(2400, tiny, "float16", "/data/cache/train-ab") == (
        "encoder-feature cache: 2,400 utterances × 1500 × 384 × 2 bytes = 2.8 GB at "
        "/data/cache/train-ab"
    )


def test_rows_count_as_done_only_once_flushed(model, dataset, tmp_path):
    key = feature_cache_key(model, dataset)
    folder = cache_folder(tmp_path, "train", key)
    cache = new_cache(folder, key, model.dims)
    assert existing_cache(folder, key) is not None and not cache.complete
    rows = torch.arange(2 * 1500 * 64, dtype=torch.float32).reshape(2, 1500, 64) / 1e5
    cache.write([3, 1], rows)
    assert cache.done().tolist() == [False] * 4  # written, not yet durable
    cache.flush()
    assert cache.done().tolist() == [False, True, False, True]
    assert cache.missing_ids == ["u0", "u2"]
    assert (
        torch.equal(cache.features(3), rows[0].half()) and cache.features(1).dtype == torch.float16
    )
    cache.write([0, 2], rows)
    cache.close()
    assert cache.complete and json.loads((folder / "meta.json").read_text())["complete"]
    assert FeatureCache.open(tmp_path, model, dataset, name="train").path == folder
    with pytest.raises(ValueError, match=r"features of shape \(1, 1500, 64\) for 2 rows"):
        cache.write([0, 1], rows[:1])
    # a pickled cache (what DataLoader workers receive) carries its paths, not its rows
    assert len(pickle.dumps(cache)) < 1500 * 64 * 2
    (folder / "done.u8").write_bytes(b"\x01")  # not one byte per row: not this key's cache
    assert existing_cache(folder, key) is None


def test_the_encoder_outputs_key_is_the_one_made_before_trained_encoder_blocks():
    # Digest of this key computed before `input_of_block` existed: existing caches are reused.
    key = FeatureCacheKey(
        encoder_sha256="ab" * 32, n_mels=80, n_samples=480000, sample_rate=16000, n_fft=400,
        hop_length=160, whisper_version="20240930", dtype="float16", compute_dtype="float32",
        utterances=(("u0", "wav/u0.wav"), ("u1", "wav/u1.wav")),
    )  # fmt: skip
    assert key.digest() == "04afd8c3f32183dd2e0175ceb19e600d64e490c95f89401a9141b710893bab54"
    assert "input_of_block" not in key.as_dict()
    assert replace(key, input_of_block=1).digest() != key.digest()


def test_a_cache_of_a_blocks_input_has_its_own_key_and_ignores_the_blocks_above(model, dataset):
    final = feature_cache_key(model, dataset)
    layer = feature_cache_key(model, dataset, input_of_block=1)
    assert layer.input_of_block == 1 and layer.digest() != final.digest()
    assert layer.encoder_sha256 != final.encoder_sha256
    with torch.no_grad():  # what trains with encoder_top_layers=1: block 1 and ln_post
        model.encoder.blocks[1].mlp[0].weight[0, 0] += 1e-3
        model.encoder.ln_post.weight[0] += 1e-3
    assert feature_cache_key(model, dataset, input_of_block=1) == layer
    assert feature_cache_key(model, dataset).digest() != final.digest()
    with torch.no_grad():
        model.encoder.blocks[0].mlp[0].weight[0, 0] += 1e-3
    assert feature_cache_key(model, dataset, input_of_block=1) != layer
    for bad in (0, 2):  # micro's encoder has 2 blocks
        with pytest.raises(FeatureCacheError, match=r"block 1 to 1 \(the encoder has 2\)"):
            feature_cache_key(model, dataset, input_of_block=bad)


def test_a_blocks_input_is_cached_and_batches_say_which_block(model, dataset, tmp_path):
    final = build(model, dataset, tmp_path / "cache")
    layer = build(model, dataset, tmp_path / "cache", input_of_block=1)
    assert layer.path != final.path and layer.input_of_block == 1
    assert FeatureCache.open(tmp_path / "cache", model, dataset, input_of_block=1).path == (
        layer.path
    )
    audio = torch.from_numpy(whisper.pad_or_trim(dataset[2]["audio"]))[None]
    with torch.no_grad():
        stem = encoder_stem(model.encoder, log_mel_batch(audio, model.dims.n_mels), 1)[0]
    torch.testing.assert_close(
        layer.features(2).float(), stem, rtol=FP16_RTOL, atol=BATCH_ATOL * stem.abs().max()
    )
    inputs = CachedFeatures(layer, dataset)
    batch = Collator(eot=50257, inputs=inputs)([dataset.with_inputs(inputs)[i] for i in (0, 1)])
    assert batch["features_block"] == 1 and batch["features"].shape == (2, 1500, 64)
    plain = CachedFeatures(final, dataset)
    assert "features_block" not in Collator(eot=50257, inputs=plain)(
        [dataset.with_inputs(plain)[0]]
    )
