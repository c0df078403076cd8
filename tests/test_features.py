"""The encoder-feature cache: built once, reused, invalidated, resumed; equal to live encoding."""

import argparse
import json
import pickle
import shutil
import time
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch
import whisper
from whisper.audio import SAMPLE_RATE
from whisper.model import Whisper

from whisper_ft.audio import log_mel_batch
from whisper_ft.augment import SpecAugment, WaveformAugment
from whisper_ft.collate import Collator
from whisper_ft.commands import add_cache_command
from whisper_ft.dataset import UtteranceDataset
from whisper_ft.features import (
    CachedFeatureDataset,
    FeatureCache,
    FeatureCacheError,
    FeatureCollator,
    build_feature_cache,
    encoder_fingerprint,
    estimate_cache_bytes,
    feature_cache_key,
    refuse_with_augmentation,
    size_message,
)
from whisper_ft.manifest import read_manifest
from whisper_ft.model import RANDOM_DIMS, load_base_model
from whisper_ft.module import token_loss

KANA = ["ア", "アイ", "アイウ", "アイウエ"]
# float16 keeps 11 significant bits: storing rounds by at most 2^-11 of a value. 1e-5 more
# allows for float32 CPU kernels summing in another order for another batch size.
FP16_RTOL, BATCH_ATOL = 2.0**-11, 1e-5
LOSS_RTOL = 1e-6  # decoder loss from cached features vs live ones, relative


@pytest.fixture
def manifest(tmp_path):
    """4 sine waves of 0.5–2 s (16 kHz) with kana targets; audio paths relative."""
    (tmp_path / "wav").mkdir()
    lines = []
    for i, kana in enumerate(KANA):
        seconds = 0.5 * (i + 1)
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        wave = 0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t).astype(np.float32)
        sf.write(tmp_path / "wav" / f"u{i}.wav", wave, SAMPLE_RATE)
        line = {"id": f"u{i}", "audio": f"wav/u{i}.wav", "text": kana, "kana": kana}
        lines.append(json.dumps(line | {"duration": seconds}, ensure_ascii=False))
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def dataset(manifest, ja_tokenizer) -> UtteranceDataset:
    return UtteranceDataset(read_manifest(manifest), manifest, ja_tokenizer, "kana")


@pytest.fixture
def model() -> Whisper:
    torch.manual_seed(0)
    return load_base_model("random:micro")


def count_rows(model: Whisper) -> list[int]:
    """Batch sizes the encoder is called with from now on (appended to the returned list)."""
    sizes: list[int] = []
    forward = model.encoder.forward

    def counting(mel):
        sizes.append(len(mel))
        return forward(mel)

    model.encoder.forward = counting
    return sizes


def build(model, dataset, cache_dir, **kwargs) -> FeatureCache:
    return build_feature_cache(
        model, dataset, cache_dir, **({"batch_size": 3, "num_workers": 0} | kwargs)
    )


def live_features(model: Whisper, dataset: UtteranceDataset, row: int) -> torch.Tensor:
    """The encoder output the module computes for one utterance: (n_audio_ctx, n_audio_state)."""
    audio = torch.from_numpy(whisper.pad_or_trim(dataset[row]["audio"]))[None]
    with torch.no_grad():
        return model.encoder(log_mel_batch(audio, model.dims.n_mels))[0]


def test_built_once_then_reused_without_an_encoder_call(model, dataset, tmp_path, capsys):
    rows = count_rows(model)
    cache = build(model, dataset, tmp_path / "cache")
    assert rows == [3, 1]  # every utterance once
    out = capsys.readouterr().out
    assert f"4 utterances × 1500 × 64 × 2 bytes = 768.0 kB at {cache.path}" in out
    assert cache.complete and cache.missing_ids == [] and len(cache) == 4
    assert cache.path.parent == tmp_path / "cache" and cache.path.name.startswith("train-")
    assert (cache.path / "features.f16").stat().st_size == 4 * 1500 * 64 * 2
    meta = json.loads((cache.path / "meta.json").read_text())
    assert meta["complete"] and meta["shape"] == [4, 1500, 64] and meta["dtype"] == "float16"
    assert [u[0] for u in meta["key"]["utterances"]] == ["u0", "u1", "u2", "u3"]

    again = build(model, dataset, tmp_path / "cache")
    assert rows == [3, 1]  # no encoder call the second time
    assert "complete (4 utterances), reused" in capsys.readouterr().out
    assert again.path == cache.path
    opened = FeatureCache.open(tmp_path / "cache", model, dataset)
    assert opened is not None and opened.path == cache.path
    assert rows == [3, 1]


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


def test_an_interrupted_build_resumes_with_the_missing_rows_only(model, dataset, tmp_path, capsys):
    forward, calls = model.encoder.forward, []

    def fails_on_the_second_batch(mel):
        calls.append(len(mel))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return forward(mel)

    model.encoder.forward = fails_on_the_second_batch
    with pytest.raises(KeyboardInterrupt):
        build(model, dataset, tmp_path / "cache", batch_size=2)
    assert FeatureCache.open(tmp_path / "cache", model, dataset) is None  # not complete
    folder = next((tmp_path / "cache").iterdir())
    assert np.fromfile(folder / "done.u8", np.uint8).tolist() == [1, 1, 0, 0]
    assert not json.loads((folder / "meta.json").read_text())["complete"]
    capsys.readouterr()

    model.encoder.forward = forward
    rows = count_rows(model)
    cache = build(model, dataset, tmp_path / "cache", batch_size=2)
    assert rows == [2]  # only u2 and u3
    assert "resuming: 2 utterances left to compute" in capsys.readouterr().out
    assert cache.complete and cache.path == folder
    for row in range(4):
        live = live_features(model, dataset, row)
        assert torch.allclose(cache.features(row).float(), live, rtol=FP16_RTOL, atol=BATCH_ATOL)


def test_stored_features_equal_live_encoding_within_float16_rounding(model, dataset, tmp_path):
    half = build(model, dataset, tmp_path / "cache")
    full = build(model, dataset, tmp_path / "cache", dtype="float32")
    for row in range(4):
        live = live_features(model, dataset, row)
        stored = half.features(row)
        assert stored.dtype == torch.float16 and stored.shape == (1500, 64)
        # Measured: max |error| 9.8e-4 at max |value| 3.55 (float16 rounding); float32: 0.
        assert torch.allclose(stored.float(), live, rtol=FP16_RTOL, atol=BATCH_ATOL)
        assert not torch.equal(stored.float(), live)  # so the bound above is what is tested
        assert torch.allclose(full.features(row), live, rtol=0, atol=BATCH_ATOL)


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
        items = CachedFeatureDataset(dataset, cache)
        batch = FeatureCollator(collator, cache.feature_shape, cache.torch_dtype)(
            [items[i] for i in range(4)]
        )
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


def test_unreadable_audio_leaves_its_row_missing_and_is_added_later(
    model, dataset, manifest, tmp_path
):
    good = (manifest.parent / "wav" / "u1.wav").read_bytes()
    (manifest.parent / "wav" / "u1.wav").write_bytes(b"not audio")
    with (
        pytest.warns(UserWarning, match="u1 skipped, the run goes on"),  # the dataset's
        pytest.warns(UserWarning, match="1 utterances not cached.*: u1\\. Training skips"),
    ):
        cache = build(model, dataset, tmp_path / "cache")
    assert not cache.complete and cache.missing_ids == ["u1"]
    assert FeatureCache.open(tmp_path / "cache", model, dataset) is None

    items = CachedFeatureDataset(dataset, cache)
    assert "not in the encoder-feature cache" in items[1]["error"]
    collate = FeatureCollator(Collator(eot=50257), cache.feature_shape)
    batch = collate([items[i] for i in range(4)])
    assert batch["skipped"] == ["u1"] and batch["ids"] == ["u0", "u2", "u3"]
    assert batch["features"].shape == (3, 1500, 64)
    empty = collate([items[1]])
    assert empty["features"].shape == (0, 1500, 64) and empty["dec_input_ids"].shape == (0, 0)

    (manifest.parent / "wav" / "u1.wav").write_bytes(good)
    rows = count_rows(model)
    assert build(model, dataset, tmp_path / "cache").complete
    assert rows == [1]


def test_augmentation_or_a_training_encoder_is_refused_with_what_to_do(
    model, manifest, ja_tokenizer, tmp_path
):
    refuse_with_augmentation(WaveformAugment(), SpecAugment())  # all off: allowed
    refuse_with_augmentation(None, None)
    with pytest.raises(FeatureCacheError, match="un-augmented audio.*speed_prob.*is on"):
        refuse_with_augmentation(WaveformAugment(speed_prob=0.5), None)
    with pytest.raises(FeatureCacheError, match=r"SpecAugment \(--model.spec_augment.prob\)"):
        refuse_with_augmentation(None, SpecAugment(prob=0.3))
    with pytest.raises(FeatureCacheError, match="needs a frozen encoder"):
        refuse_with_augmentation(None, None, freeze_encoder=False)

    augmented = UtteranceDataset(
        read_manifest(manifest), manifest, ja_tokenizer, "kana", WaveformAugment(volume_prob=1)
    )
    rows = count_rows(model)
    with pytest.raises(FeatureCacheError, match="Set those probabilities to 0"):
        build(model, augmented, tmp_path / "cache")
    assert rows == [] and not (tmp_path / "cache").exists()


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


def test_too_little_disk_space_stops_before_writing(model, dataset, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(FeatureCacheError, match=r"needs 768\.0 kB more, but only 1\.0 kB"):
        build(model, dataset, tmp_path / "cache")
    assert list((tmp_path / "cache").glob("[!.]*")) == []  # only the build's lock file


def test_the_dataset_must_be_the_one_the_cache_was_built_for(
    model, dataset, ja_tokenizer, tmp_path
):
    cache = build(model, dataset, tmp_path / "cache")
    reordered = UtteranceDataset(dataset.utterances[::-1], dataset.manifest, ja_tokenizer)
    with pytest.raises(FeatureCacheError, match="other utterances than .*train.jsonl holds"):
        CachedFeatureDataset(reordered, cache)


def test_workers_receive_the_cache_without_its_rows(model, dataset, tmp_path):
    cache = build(model, dataset, tmp_path / "cache")
    items = CachedFeatureDataset(dataset, cache)
    first = items[0]["features"]  # maps the file in this process
    assert len(pickle.dumps(items)) < first.numel() * first.element_size()
    loader = torch.utils.data.DataLoader(
        items,
        batch_size=2,
        num_workers=2,
        collate_fn=FeatureCollator(Collator(eot=50257), cache.feature_shape),
    )
    stacked = torch.cat([batch["features"] for batch in loader])
    assert torch.equal(stacked, torch.stack([cache.features(i) for i in range(4)]))


def test_cache_command_checks_the_data_builds_then_reuses(manifest, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_cache_command(parser.add_subparsers(dest="command"))
    argv = [
        "cache",
        "--model",
        "random:micro",
        "--manifest",
        str(manifest),
        "--out",
        str(tmp_path / "cache"),
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--workers",
        "0",
    ]
    args = parser.parse_args(argv)
    torch.manual_seed(0)  # random:micro draws its weights: the same seed, the same encoder
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"data check {manifest}: 0 of 4 lines excluded" in out
    assert "encoder-feature cache: 4 utterances × 1500 × 64 × 2 bytes = 768.0 kB" in out
    assert "4 utterances computed" in out
    torch.manual_seed(0)
    assert args.func(args) == 0
    assert "complete (4 utterances), reused" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "--batch-size", "0"])


def test_a_second_builder_waits_for_the_first_and_computes_nothing(model, dataset, tmp_path):
    # Two fits, or DDP ranks, building one cache at once: without a lock the second computed
    # rows too, and its _create could zero rows the first had marked done. Threads: flock
    # locks per open file, so two opens in one process exclude each other as two processes do.
    import copy
    import threading

    other = copy.deepcopy(model)  # the same weights: the same cache key and folder
    started = threading.Event()
    forward = other.encoder.forward

    def slow(mel):
        started.set()
        time.sleep(1.0)  # keeps the first build going while the second builder starts
        return forward(mel)

    other.encoder.forward = slow
    first = threading.Thread(target=build, args=(other, dataset, tmp_path / "cache"),
                             kwargs={"progress": False})  # fmt: skip
    first.start()
    assert started.wait(120)
    rows = count_rows(model)
    cache = build(model, dataset, tmp_path / "cache", progress=False)
    first.join(120)
    assert rows == []  # it waited on the lock, then found every row done
    assert cache.complete
    for row in range(len(dataset)):
        expected = live_features(model, dataset, row)
        assert torch.allclose(cache.features(row).float(), expected, atol=1e-2, rtol=1e-2)
