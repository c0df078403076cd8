"""The DataModule end to end: start-up check, exclusions, unreadable audio, sampler, augment."""

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from whisper_ft.data.augment import WaveformAugment
from whisper_ft.data.datamodule import ModelSide, WhisperDataModule
from whisper_ft.data.dataset import UtteranceDataset
from whisper_ft.data.sampler import BucketingBatchSampler
from whisper_ft.manifest import ManifestError, read_manifest


def _copy_corpus(corpus, tmp_path) -> dict:
    """The session corpus's manifests copied into tmp_path (audio paths made absolute), so a
    test may spoil them."""
    out = {}
    for split, path in corpus.items():
        lines = []
        for utterance in read_manifest(path):
            utterance.audio = str(utterance.audio_path(path.parent))
            lines.append(utterance.to_json())
        out[split] = tmp_path / f"{split}.jsonl"
        out[split].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _data(manifests, **kwargs) -> WhisperDataModule:
    paths = {f"{split}_manifest": str(path) for split, path in manifests.items()}
    return WhisperDataModule(**(paths | {"batch_size": 4, "num_workers": 0} | kwargs))


def test_fit_on_a_manifest_with_bad_lines_excludes_them_and_says_so(
    micro, corpus, make_trainer, tmp_path, capsys
):
    manifests = _copy_corpus(corpus, tmp_path)
    good = manifests["train"].read_text(encoding="utf-8")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    first = json.loads(good.splitlines()[0])
    bad = [
        "{not json",  # line 25
        json.dumps({"id": "no_text", "audio": first["audio"]}),  # 26
        json.dumps({"id": "gone", "audio": str(tmp_path / "missing.wav"), "text": "ア"}),  # 27
        json.dumps({"id": "empty", "audio": str(empty), "text": "ア"}),  # 28
        json.dumps({"id": "dots", "audio": first["audio"], "text": "。。"}),  # 29
        json.dumps(first | {"text": first["text"]}),  # 30: a repeated id
    ]
    manifests["train"].write_text(good + "\n".join(bad) + "\n", encoding="utf-8")
    before = manifests["train"].read_bytes()

    trainer = make_trainer(max_steps=3, limit_val_batches=0)
    datamodule = _data(manifests)
    trainer.fit(micro, datamodule)

    assert trainer.global_step == 3
    out = capsys.readouterr().out
    summary = next(line for line in out.splitlines() if "train.jsonl" in line)
    assert "6 of 30 lines excluded" in summary and "report: " in summary
    report = summary.split("report: ")[1].strip()
    with open(report, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert {int(row["line"]) for row in rows} == {25, 26, 27, 28, 29, 30}
    assert datamodule.exclusions["train"]["excluded_by_data_check"] == 6
    assert len(datamodule.datasets["train"]) == 24
    assert manifests["train"].read_bytes() == before  # never rewritten


def test_audio_that_breaks_during_training_is_skipped_and_counted(
    micro, corpus, make_trainer, tmp_path
):
    manifests = _copy_corpus(corpus, tmp_path)
    utterances = read_manifest(manifests["train"])
    trainer = make_trainer(max_steps=6, limit_val_batches=0)  # one epoch: every utterance
    datamodule = _data(manifests)
    # The start-up check passes (the file is fine then); then it is overwritten with junk.
    broken = tmp_path / "broken.wav"
    shutil.copy(utterances[0].audio, broken)
    utterances[0].audio = str(broken)
    manifests["train"].write_text("".join(u.to_json() + "\n" for u in utterances), encoding="utf-8")
    original_setup = datamodule.setup

    def setup_then_break(stage):
        original_setup(stage)
        broken.write_bytes(b"RIFF junk that is no longer audio")

    datamodule.setup = setup_then_break
    with pytest.warns(UserWarning, match=r"train\.jsonl:1: .* skipped, the run goes on"):
        trainer.fit(micro, datamodule)
    assert trainer.global_step == 6
    assert micro.skipped["train"] == 1
    assert trainer.logged_metrics["train_skipped_audio"] == 1


def test_a_manifest_with_no_usable_line_stops_with_its_name(micro, make_trainer, tmp_path):
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(
        json.dumps({"id": "a", "audio": str(tmp_path / "none.wav"), "text": "ア"}) + "\n"
    )
    with pytest.raises(ManifestError, match=r"train\.jsonl: none of its 1 lines can be used"):
        make_trainer(max_steps=1).fit(micro, WhisperDataModule(str(manifest), num_workers=0))


def test_hand_written_lines_get_kana_and_duration_from_the_check(micro, make_trainer, tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(24000 * 2, np.float32), 24000)
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "a.wav", "text": "東京"}) + "\n")
    datamodule = WhisperDataModule(str(manifest), batch_size=1, num_workers=0)
    make_trainer(max_steps=1).fit(micro, datamodule)
    dataset = datamodule.datasets["train"]
    assert dataset.targets == ["トーキョー"] and dataset.durations_s == [2.0]
    assert manifest.read_text() == json.dumps({"id": "a", "audio": "a.wav", "text": "東京"}) + "\n"


def test_the_target_comes_from_the_manifest_unless_given(micro, corpus, make_trainer, tmp_path):
    manifests = _copy_corpus(corpus, tmp_path)
    lines = [json.loads(line) for line in manifests["train"].read_text().splitlines()]
    manifests["train"].write_text(
        "".join(json.dumps(line | {"target": "text"}) + "\n" for line in lines)
    )
    by_manifest = _data({"train": manifests["train"]})
    make_trainer(max_steps=1).fit(micro, by_manifest)
    assert by_manifest.datasets["train"].targets[0] == lines[0]["text"]
    assert by_manifest.collators["train"].target == "text"
    given = _data({"train": manifests["train"]}, target="kana")
    make_trainer(max_steps=1).fit(micro, given)
    assert given.datasets["train"].targets[0] == lines[0]["kana"]


def test_loaders_bucket_by_length_and_augment_training_audio_only(micro, corpus, make_trainer):
    augment = WaveformAugment(volume_prob=1.0, gain_db=(6.0, 6.0))
    datamodule = _data(corpus, augment=augment, max_duration_s=10.0)
    make_trainer(max_steps=1, limit_val_batches=1).fit(micro, datamodule)
    train, val = datamodule.train_dataloader(), datamodule.val_dataloader()
    assert isinstance(train.batch_sampler, BucketingBatchSampler)
    for batch in train.batch_sampler:  # seconds of audio per training batch, at most 10
        assert sum(datamodule.datasets["train"].durations_s[i] for i in batch) <= 10.0
    assert [len(b) for b in val.batch_sampler] == [3]  # eval: batch_size utterances
    dataset = datamodule.datasets["train"]
    plain = UtteranceDataset(dataset.utterances, dataset.manifest, micro.tokenizer)
    np.testing.assert_allclose(dataset[0]["audio"], np.clip(plain[0]["audio"] * 10**0.3, -1, 1))
    assert datamodule.datasets["val"].augment is None
    assert datamodule.hparams["augment"]["volume_prob"] == 1.0  # a plain dict in checkpoints


def test_fit_trains_from_the_feature_cache_as_it_would_live(corpus, make_trainer, tmp_path):
    import pytorch_lightning as pl

    from whisper_ft.training.module import WhisperFineTuner

    weights = {}
    for setting in ("off", "auto"):
        pl.seed_everything(0, verbose=False)
        module = WhisperFineTuner(base_model="random:micro", lr_warmup_steps=0)
        datamodule = _data(corpus, feature_cache=setting)
        trainer = make_trainer(max_epochs=2, limit_val_batches=1, default_root_dir=tmp_path)
        trainer.fit(module, datamodule)
        weights[setting] = module.model.decoder.token_embedding.weight.detach().clone()
        batch = next(iter(datamodule.train_dataloader()))
        assert ("features" in batch) == (setting == "auto")
    [folder] = [p for p in (tmp_path / "feature_cache").iterdir() if p.name.startswith("train-")]
    assert (folder / "features.f16").stat().st_size == 24 * 1500 * 64 * 2  # micro: 64 wide
    # 12 decoder steps from float16-stored features end where live encoding ends
    torch.testing.assert_close(weights["auto"], weights["off"], atol=2e-4, rtol=0)


def test_auto_cache_stays_off_when_it_cannot_apply_or_pay(micro, corpus, make_trainer, capsys):
    from whisper_ft.data.feature_cache import FeatureCacheError

    one_pass = _data(corpus)
    make_trainer(max_steps=2, limit_val_batches=0).fit(micro, one_pass)
    assert "fit reads the training set 0.3 times" in capsys.readouterr().out
    augmented = _data(corpus, augment=WaveformAugment(volume_prob=0.5))
    make_trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=0).fit(micro, augmented)
    for datamodule in (one_pass, augmented):
        assert isinstance(datamodule.datasets["train"], UtteranceDataset)
    refused = _data(corpus, augment=WaveformAugment(volume_prob=0.5), feature_cache="cache")
    with pytest.raises(FeatureCacheError, match="augment.speed_prob/volume_prob"):
        make_trainer(max_steps=1).fit(micro, refused)


def test_validate_reads_val_features_from_a_cache_folder(micro, corpus, make_trainer, tmp_path):
    folder = str(tmp_path / "features")
    first = _data({"val": corpus["val"]}, feature_cache=folder)
    [live] = make_trainer().validate(micro, _data({"val": corpus["val"]}), verbose=False)
    [built] = make_trainer().validate(micro, first, verbose=False)  # builds the cache
    again = _data({"val": corpus["val"]}, feature_cache=folder)
    [cached] = make_trainer().validate(micro, again, verbose=False)
    assert "features" in next(iter(again.val_dataloader()))
    assert len(list((tmp_path / "features").glob("val-*/features.f16"))) == 1
    # float16-stored features: the same loss to ~1e-3 relative
    assert cached["val_loss"] == pytest.approx(live["val_loss"], rel=1e-3)
    assert built["val_loss"] == pytest.approx(cached["val_loss"], rel=1e-6)


def test_a_connected_data_module_checks_its_data_without_a_module(corpus, ja_tokenizer, micro):
    # Built alone: the model side is declared, not read from a LightningModule.
    datamodule = _data({"train": corpus["train"]})
    datamodule.connect(ModelSide(tokenizer=ja_tokenizer, n_text_ctx=448))
    result = datamodule._check("train")
    assert result.n_excluded == 0 and len(result.utterances) == 24

    # A decoder context too short for any target excludes every line, as the check says.
    short = _data({"train": corpus["train"]})
    short.connect(ModelSide(tokenizer=ja_tokenizer, n_text_ctx=5))
    assert short._check("train").n_excluded == 24

    # ModelSide.of reads a WhisperFineTuner once, in one place.
    side = ModelSide.of(micro)
    assert side.model is micro.model and side.n_text_ctx == micro.model.dims.n_text_ctx
    assert side.freeze_encoder is True and side.tokenizer is micro.tokenizer
