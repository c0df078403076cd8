"""Two processes on the CPU (gloo): DDP trains as one process with the same global batch does,
evaluation scores every test utterance once, and only rank 0 writes the report."""

import csv
import json
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import whisper
import whisper.timing
from torch.nn.parallel import DistributedDataParallel
from whisper.model import Whisper

from whisper_ft.data.datamodule import WhisperDataModule
from whisper_ft.manifest import read_manifest
from whisper_ft.models.loading import (
    RANDOM_DIMS,
    dense_alignment_heads,
    export_checkpoint,
    load_base_model,
)
from whisper_ft.training.module import WhisperFineTuner

# Largest |DDP weight - single-process weight| allowed after 3 AdamW steps (lr 5e-4, set in
# the tests: the tolerance is derived for it, not for the recipe's default). The two
# runs compute the same gradient, (g_a + g_b) / 2, with float32 sums in another order (gloo's
# all-reduce then / 2, against Lightning's accumulation of g_a / 2 + g_b / 2); Adam divides by
# sqrt(v), which turns a 1e-7 difference of a tiny gradient into up to ~lr per step.
WEIGHT_TOLERANCE = 1e-4


def test_whisper_sparse_alignment_mask_is_refused_by_ddp_and_the_dense_one_is_not(tmp_path):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    try:
        with pytest.raises(RuntimeError, match="sparse"):
            DistributedDataParallel(Whisper(RANDOM_DIMS["micro"]))  # whisper's own buffer
        model = load_base_model("random:micro")
        DistributedDataParallel(model)
    finally:
        torch.distributed.destroy_process_group()
    mask = Whisper(RANDOM_DIMS["micro"]).alignment_heads.to_dense()
    assert model.alignment_heads.layout == torch.strided
    assert torch.equal(model.alignment_heads, mask)
    assert "alignment_heads" not in model.state_dict()  # exports and checkpoints unchanged


def test_exported_model_has_whisper_alignment_heads_and_aligns_words(tmp_path):
    model = load_base_model("random:micro")
    ckpt = tmp_path / "run.ckpt"
    state_dict = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"whisper_dims": vars(model.dims).copy(), "state_dict": state_dict}, ckpt)
    loaded = whisper.load_model(str(export_checkpoint(ckpt, tmp_path / "model.pt")), "cpu")
    assert loaded.alignment_heads.is_sparse  # what whisper.timing reads with .indices()
    assert torch.equal(loaded.alignment_heads.to_dense(), model.alignment_heads)
    tokenizer = whisper.tokenizer.get_tokenizer(True, language="en", task="transcribe")
    audio = torch.sin(torch.arange(whisper.audio.SAMPLE_RATE) * 0.05)  # 1 s
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), loaded.dims.n_mels)
    words = whisper.timing.find_alignment(
        loaded, tokenizer, tokenizer.encode(" hello world"), mel, num_frames=100
    )
    assert [w.word for w in words] == [" hello", " world"]
    assert all(0.0 <= w.start <= w.end <= 1.0 for w in words)
    # the dense mask names the same heads
    assert torch.equal(dense_alignment_heads(loaded).alignment_heads, model.alignment_heads)


def _trainer(root: Path, **kwargs) -> pl.Trainer:
    settings = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": root,
    }
    return pl.Trainer(**(settings | kwargs))


def _data(corpus: dict) -> WhisperDataModule:
    # num_buckets=1: one global batch order for any process count (see sampler.py)
    return WhisperDataModule(
        str(corpus["train"]),
        test_manifest=str(corpus["test"]),
        batch_size=4,
        eval_batch_size=2,
        num_buckets=1,
        num_workers=0,
        feature_cache="off",
    )


def _micro() -> WhisperFineTuner:
    pl.seed_everything(0, verbose=False)
    return WhisperFineTuner(base_model="random:micro", lr=5e-4, lr_warmup_steps=0)


def _max_difference(a: WhisperFineTuner, b: WhisperFineTuner) -> float:
    return max(
        (x - y).abs().max().item()
        for x, y in zip(a.model.parameters(), b.model.parameters(), strict=True)
    )


def _test_report(root: Path) -> tuple[dict, list[str]]:
    (metrics,) = root.rglob("metrics.json")  # exactly one
    (predictions,) = root.rglob("predictions.tsv")
    with predictions.open(encoding="utf-8") as f:
        ids = [row["id"] for row in csv.DictReader(f, delimiter="\t")]
    return json.loads(metrics.read_text()), ids


def test_two_process_ddp_trains_like_one_process_and_scores_every_utterance_once(
    corpus, tmp_path, capfd
):
    # DDP: each process takes every 2nd batch of 4, so step k averages the gradients of global
    # batches 2k and 2k+1, as one process accumulating 2 batches of 4 does.
    ddp = _micro()
    initial = _micro()
    _trainer(tmp_path / "ddp", devices=2, strategy="ddp_spawn", max_steps=3).fit(ddp, _data(corpus))
    single = _micro()
    _trainer(tmp_path / "single", max_steps=3, accumulate_grad_batches=2).fit(single, _data(corpus))
    assert _max_difference(ddp, initial) > 5 * WEIGHT_TOLERANCE  # it did train
    assert _max_difference(ddp, single) < WEIGHT_TOLERANCE

    # the same weights evaluated by two processes and by one
    capfd.readouterr()
    _trainer(tmp_path / "test_ddp", devices=2, strategy="ddp_spawn").test(ddp, _data(corpus))
    assert capfd.readouterr().out.count("metrics:") == 1  # rank 0 alone wrote the report
    _trainer(tmp_path / "test_single").test(ddp, _data(corpus))
    two, two_ids = _test_report(tmp_path / "test_ddp")
    one, one_ids = _test_report(tmp_path / "test_single")
    test_ids = sorted(u.id for u in read_manifest(corpus["test"]))
    assert two_ids == one_ids == test_ids  # every utterance once, none twice
    assert two["n_utterances"] == one["n_utterances"] == len(test_ids)
    assert (two["char_errors"], two["chars"]) == (one["char_errors"], one["chars"])
    assert two["cer"] == one["cer"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP and DeepSpeed need 2 GPUs")
@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed_stage_2"])
def test_sharded_full_fine_tuning_smoke_on_gpus(strategy, corpus, tmp_path):
    # Lightning refuses both on the CPU ("requires a GPU accelerator"); CI has no GPU.
    if strategy.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    pl.seed_everything(0, verbose=False)
    module = WhisperFineTuner(
        base_model="random:micro", freeze_encoder=False, lr=5e-4, lr_warmup_steps=0
    )
    trainer = pl.Trainer(
        accelerator="cuda",
        devices=2,
        strategy=strategy,
        precision="bf16-mixed",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, _data(corpus))
    assert trainer.global_step == 2


class NanOnRank1(WhisperFineTuner):
    """Its loss is nan on process 1 at step 1 (module level: ddp_spawn pickles it)."""

    def features(self, batch: dict, augment: bool = False) -> torch.Tensor:
        features = super().features(batch, augment)
        if self.global_rank == 1 and self.global_step == 1:
            return features * float("nan")
        return features


def test_a_nan_loss_on_one_process_skips_its_share_and_training_goes_on(corpus, tmp_path):
    pl.seed_everything(0, verbose=False)
    module = NanOnRank1(base_model="random:micro", lr=5e-4, lr_warmup_steps=0)
    trainer = _trainer(tmp_path, devices=2, strategy="ddp_spawn", max_steps=3)
    trainer.fit(module, _data(corpus))  # Lightning refuses a None step under DDP: not returned
    assert trainer.state.finished  # ddp_spawn hands back the state and weights, not the step
    assert all(torch.isfinite(v).all() for v in module.state_dict().values())
    assert _max_difference(module, _micro()) > 0  # it trained


class EncoderCalls:
    """A forward hook (picklable, so it travels to ddp_spawn's processes) that appends the
    calling process's id to a file for every encoder pass."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, module, args, output) -> None:
        with open(self.path, "a") as f:
            f.write(f"{os.getpid()}\n")


def test_two_processes_build_one_feature_cache_and_train_from_it(corpus, tmp_path):
    # Both processes reach the cache build; the file lock lets one compute, the other waits
    # (no collective barrier that a long build would time out) and reads the finished cache.
    # Which process wins the lock varies; that only one ran the encoder does not.
    def cached(corpus: dict) -> WhisperDataModule:
        data = _data(corpus)
        data.hparams.feature_cache = str(tmp_path / "cache")
        return data

    calls = tmp_path / "encoder_calls.txt"
    ddp = _micro()
    ddp.model.encoder.register_forward_hook(EncoderCalls(calls))
    _trainer(tmp_path / "ddp", devices=2, strategy="ddp_spawn", max_steps=3).fit(
        ddp, cached(corpus)
    )
    builders = set(calls.read_text().split())
    assert len(builders) == 1, builders  # one process encoded; training read the cache
    single = _micro()
    single.model.encoder.register_forward_hook(EncoderCalls(calls))
    _trainer(tmp_path / "single", max_steps=3, accumulate_grad_batches=2).fit(
        single, cached(corpus)
    )
    assert set(calls.read_text().split()) == builders  # found complete: no encoder pass
    (folder,) = (p for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))
    assert folder.name.startswith("train-")  # one cache (beside its lock file)
    assert _max_difference(ddp, single) < WEIGHT_TOLERANCE
