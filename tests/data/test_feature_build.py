"""Building the encoder-feature store: once, reused, resumed, equal to live encoding; refused
with augmentation or too little disk; one builder at a time; the `cache` command."""

import argparse
import json
import shutil
import time

import numpy as np
import pytest
import torch
from feature_helpers import (
    BATCH_ATOL,
    FP16_RTOL,
    build,
    count_rows,
    live_features,
    sine_fixtures,
)

from whisper_ft.cli.commands import add_cache_command
from whisper_ft.data.augment import SpecAugment, WaveformAugment
from whisper_ft.data.collate import Collator
from whisper_ft.data.dataset import UtteranceDataset
from whisper_ft.data.feature_cache import (
    CachedFeatures,
    FeatureCache,
    FeatureCacheError,
    refuse_with_augmentation,
)
from whisper_ft.manifest import read_manifest

manifest, dataset, model = sine_fixtures()


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


def test_a_float32_build_stores_the_fp32_encoder_output_and_a_bf16_build_does_not(
    model, dataset, tmp_path
):
    full = build(model, dataset, tmp_path / "cache", precision="32-true")
    bf16 = build(model, dataset, tmp_path / "cache", precision="bf16-mixed")
    assert full.path != bf16.path
    assert full.meta["compute_dtype"] == "float32" and bf16.meta["compute_dtype"] == "bfloat16"
    for row in range(4):
        live = live_features(model, dataset, row)
        assert torch.allclose(full.features(row).float(), live, rtol=FP16_RTOL, atol=BATCH_ATOL)
        # bf16 keeps 8 significant bits: its encoder output is off by far more than storage
        error = (bf16.features(row).float() - live).abs().max().item()
        assert error > 10 * FP16_RTOL * live.abs().max().item()


@pytest.mark.parametrize(("precision", "compute_dtype"), [("32-true", "float32"),
                                                          ("bf16-mixed", "bfloat16")])  # fmt: skip
def test_a_fit_builds_its_cache_in_its_trainers_precision(
    manifest, make_trainer, tmp_path, precision, compute_dtype
):
    from whisper_ft.data.datamodule import WhisperDataModule
    from whisper_ft.training.module import WhisperFineTuner

    torch.manual_seed(0)
    module = WhisperFineTuner(base_model="random:micro", lr_warmup_steps=0)
    data = WhisperDataModule(train_manifest=str(manifest), batch_size=4, num_workers=0,
                             feature_cache=str(tmp_path / "features"))  # fmt: skip
    trainer = make_trainer(max_steps=1, limit_val_batches=0, precision=precision)
    trainer.fit(module, data)
    [meta_path] = (tmp_path / "features").glob("train-*/meta.json")
    meta = json.loads(meta_path.read_text())
    assert meta["complete"] and meta["compute_dtype"] == compute_dtype
    assert meta["key"]["compute_dtype"] == compute_dtype


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

    inputs = CachedFeatures(cache, dataset)
    items = dataset.with_inputs(inputs)
    assert "not in the encoder-feature cache" in items[1]["error"]
    collate = Collator(eot=50257, inputs=inputs)
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


def test_too_little_disk_space_stops_before_writing(model, dataset, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(FeatureCacheError, match=r"needs 768\.0 kB more, but only 1\.0 kB"):
        build(model, dataset, tmp_path / "cache")
    assert list((tmp_path / "cache").glob("[!.]*")) == []  # only the build's lock file


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
