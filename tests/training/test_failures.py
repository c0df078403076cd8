"""Failure modes end with one clear message: nan/inf loss, out of memory, a full disk,
unreadable checkpoints; and --tune_batch_size."""

import errno
import os

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

import whisper_ft.training.module
from whisper_ft.cli.entry import main
from whisper_ft.data.datamodule import WhisperDataModule
from whisper_ft.data.feature_cache import FeatureCache
from whisper_ft.training.failures import (
    InFlight,
    NonFiniteLossError,
    NonFiniteLossGuard,
    is_out_of_memory,
    out_of_memory_message,
)
from whisper_ft.training.module import WhisperFineTuner


def train_data(corpus, **kwargs) -> WhisperDataModule:
    settings = {"batch_size": 4, "num_workers": 0, "feature_cache": "off"} | kwargs
    return WhisperDataModule(str(corpus["train"]), **settings)


def nan_loss_on(monkeypatch, bad_calls: set[int]) -> None:
    """token_loss returns nan (still attached to the graph) on the chosen calls, 0-based."""
    real, calls = whisper_ft.training.module.token_loss, [0]

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        value = real(logits, labels)
        calls[0] += 1
        return value * float("nan") if calls[0] - 1 in bad_calls else value

    monkeypatch.setattr(whisper_ft.training.module, "token_loss", loss)


class Recorder(pl.Callback):
    """Decoder weights around every training batch, and the batches' ids."""

    def __init__(self) -> None:
        self.before, self.after, self.ids = [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.ids.append(list(batch["ids"]))
        self.before.append({k: v.clone() for k, v in pl_module.model.decoder.state_dict().items()})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after.append({k: v.clone() for k, v in pl_module.model.decoder.state_dict().items()})


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_a_nan_loss_skips_the_step_and_is_counted(micro, corpus, make_trainer, monkeypatch):
    nan_loss_on(monkeypatch, {1})
    recorder = Recorder()
    trainer = make_trainer(max_steps=3, limit_val_batches=0, callbacks=[recorder])
    with pytest.warns(UserWarning, match=r"step 1: training loss is nan; the step is skipped"):
        trainer.fit(micro, train_data(corpus))
    assert micro.nonfinite_steps == 1 and trainer.global_step == 3  # training went on
    assert trainer.callback_metrics["train_nonfinite_steps"] == 1
    assert same(recorder.before[1], recorder.after[1])  # the bad step changed nothing
    assert not same(recorder.before[0], recorder.after[0])  # the good ones did
    assert not same(recorder.before[2], recorder.after[2])
    assert all(torch.isfinite(v).all() for v in micro.model.state_dict().values())


def test_consecutive_nan_losses_stop_naming_the_utterances(
    corpus, make_trainer, monkeypatch, tmp_path
):
    pl.seed_everything(0, verbose=False)
    model = WhisperFineTuner("random:micro", lr_warmup_steps=0, max_nonfinite_steps=2)
    nan_loss_on(monkeypatch, {1, 2, 3})  # one good step (checkpointed), then nan only
    recorder = Recorder()
    checkpoints = pl.callbacks.ModelCheckpoint(tmp_path / "ckpt", every_n_train_steps=1)
    trainer = make_trainer(
        max_steps=5, limit_val_batches=0, callbacks=[recorder, checkpoints],
        enable_checkpointing=True,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="step 1: training loss is nan"):
        with pytest.raises(NonFiniteLossError) as error:
            trainer.fit(model, train_data(corpus))
    message = str(error.value)
    assert "nan or inf for 2 steps in a row" in message and "`lr` (now 0.0001)" in message
    for step, ids in ((1, recorder.ids[1]), (2, recorder.ids[2])):
        assert f"step {step}: {', '.join(ids)}" in message
    assert "\n" not in message and "16-mixed" not in message  # 32-true: no precision advice
    assert same(recorder.before[1], model.model.decoder.state_dict())  # nothing since step 1
    # The last checkpoint (after step 1, skipped: steps still count) holds the good weights.
    [kept] = (tmp_path / "ckpt").glob("*.ckpt")
    state = torch.load(kept, weights_only=True)
    assert state["global_step"] == 2
    decoder = {k.removeprefix("model.decoder."): v for k, v in state["state_dict"].items()}
    assert same(recorder.before[1], {k: decoder[k] for k in recorder.before[1]})


def test_a_diverging_fit_ends_with_one_error_line(corpus, monkeypatch, tmp_path):
    nan_loss_on(monkeypatch, set(range(100)))
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="training loss is nan"):
        with pytest.raises(SystemExit) as exit_:
            main(["fit", "--model.base_model", "random:micro", "--model.max_nonfinite_steps", "2",
                  "--data.train_manifest", str(corpus["train"]), "--data.batch_size", "4",
                  "--data.num_workers", "0", "--data.feature_cache", "off",
                  "--trainer.max_steps", "3",
                  "--trainer.enable_progress_bar", "false"])  # fmt: skip
    line = str(exit_.value.code)
    assert line.startswith("error: training stopped: the loss was nan or inf for 2 steps")
    # the command line names its flags where the library names parameters
    assert "Lower --model.lr (now 0.0001)" in line and "(--model.max_nonfinite_steps)" in line
    assert "\n" not in line and "step 0: " in line and "step 1: " in line


def test_out_of_memory_names_the_batch_in_flight(micro, corpus, make_trainer, monkeypatch):
    def out_of_memory(*args):
        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
            "14.74 GiB of which 1.2 GiB is free.\nIf reserved but unallocated memory is large…"
        )

    monkeypatch.setattr(micro, "train_decoder", out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError) as error:
        make_trainer(max_steps=1, limit_val_batches=0).fit(micro, train_data(corpus))
    [note] = error.value.__notes__
    assert note.startswith("It happened in training on a batch of 4 utterances, ")
    tokens = micro.in_flight.tokens
    assert tokens[0] == 4 and f", {tokens[1]} decoder tokens each, 4 × 30-s encoder windows" in note
    longest = micro.in_flight.audio_lengths.max().item() / 16000
    assert f"(audio: longest {longest:.1f} s" in note
    # parameters, as a notebook passes them (the command line turns them into flags)
    for advice in ("`batch_size`", "`accumulate_grad_batches`", "`max_duration_s`",
                   "`tune_batch_size`"):  # fmt: skip
        assert advice in note
    line = out_of_memory_message(error.value)
    assert line.startswith("CUDA out of memory. It happened in training") and "\n" not in line


def test_the_guard_skips_nonfinite_losses_and_stops_at_the_nth_in_a_row():
    guard = NonFiniteLossGuard(max_steps=2)
    assert guard.check(1.5, 0, ["a"], lr=1e-4, precision="32-true")
    with pytest.warns(UserWarning, match=r"step 1: training loss is nan; .*utterances b, c\)"):
        assert not guard.check(float("nan"), 1, ["b", "c"], lr=1e-4, precision="32-true")
    assert guard.check(0.7, 2, ["d"], lr=1e-4, precision="32-true")  # a good step resets the run
    with pytest.warns(UserWarning, match="step 3: training loss is inf"):
        assert not guard.check(float("inf"), 3, ["e"], lr=1e-4, precision="16-mixed")
    with pytest.raises(NonFiniteLossError) as error:
        guard.check(float("nan"), 4, ["f"], lr=1e-4, precision="16-mixed")
    message = str(error.value)
    assert "for 2 steps in a row" in message and "step 3: e; step 4: f" in message
    assert "step 1" not in message and "bf16-mixed" in message and guard.total == 3


def test_the_guard_stops_with_the_other_processes_and_says_whose_loss_it_was():
    guard = NonFiniteLossGuard(max_steps=3)
    with pytest.raises(NonFiniteLossError, match="another process's loss was nan or inf for 3"):
        guard.check(0.5, 7, ["a"], lr=1e-4, precision="32-true", any_process=lambda stop: True)
    with pytest.raises(ValueError, match="max_nonfinite_steps must be at least 1, got 0"):
        NonFiniteLossGuard(max_steps=0)


def test_in_flight_advice_without_a_trainer():
    batch = {"ids": ["a", "b"], "dec_input_ids": torch.zeros(2, 9, dtype=torch.long),
             "audio_lengths": torch.tensor([16000 * 3, 16000 * 12])}  # fmt: skip
    advice = InFlight.of(batch, "validation").advice()
    assert advice.startswith("It happened in validation on a batch of 2 utterances, 9 decoder")
    assert "(audio: longest 12.0 s, 15.0 s in all)" in advice
    cached = InFlight.of({**batch, "features": torch.zeros(2, 1, 1)}, "test").advice()
    assert "cached encoder features" in cached and "longest" not in cached


def test_the_cpu_allocators_error_counts_as_out_of_memory():
    cpu = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't allocate memory: you "
        "tried to allocate 17179869184 bytes. Error code 12 (Cannot allocate memory)"
    )
    assert is_out_of_memory(cpu) and is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert not is_out_of_memory(RuntimeError("size mismatch"))


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "empty"])
def test_an_unreadable_checkpoint_is_one_error_line(micro, tmp_path, kind):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": micro.state_dict()}, good)
    data = good.read_bytes()
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(
        {"truncated": data[: len(data) // 2], "random bytes": os.urandom(4096), "empty": b""}[kind]
    )
    bad_pt = tmp_path / "bad.pt"  # a Whisper .pt, read by whisper.load_model
    bad_pt.write_bytes(bad.read_bytes())
    for path, command in ((bad, ["export", str(bad), str(tmp_path / "out.pt")]),
                          (bad, ["transcribe", "--model", str(bad), "x.wav"]),
                          (bad_pt, ["transcribe", "--model", str(bad_pt), "x.wav"])):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(command)
        line = str(exit_.value.code)
        assert line.startswith(f"error: {path}: cannot read this checkpoint (") and "\n" not in line
        assert "truncated, corrupt or not a PyTorch checkpoint" in line
    assert not (tmp_path / "out.pt").exists()


def test_a_full_disk_while_caching_keeps_the_rows_written(corpus, tmp_path, monkeypatch, capsys):
    real_write, calls = FeatureCache.write, [0]

    def write(self, rows, features):
        calls[0] += 1
        if calls[0] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(self, rows, features)

    monkeypatch.setattr(FeatureCache, "write", write)
    command = ["cache", "--model", "random:micro", "--manifest", str(corpus["train"]),
               "--out", str(tmp_path), "--workers", "0", "--batch-size", "4"]  # fmt: skip
    torch.manual_seed(0)  # random:micro: the same encoder, so the same cache, both runs
    with pytest.raises(SystemExit) as exit_:
        main(command)
    line = str(exit_.value.code)
    assert line.startswith("error: no space left on the device. ") and "\n" not in line
    [done] = tmp_path.glob("*/done.u8")
    assert np.fromfile(done, np.uint8).sum() == 8  # the two batches written before it failed

    monkeypatch.setattr(FeatureCache, "write", real_write)
    capsys.readouterr()
    torch.manual_seed(0)
    with pytest.raises(SystemExit) as exit_:
        main(command)
    assert exit_.value.code == 0 and "resuming: 16 utterances left" in capsys.readouterr().out
    assert np.fromfile(done, np.uint8).all()


def test_tune_batch_size_finds_and_uses_a_larger_batch(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    six = tmp_path / "six.jsonl"
    lines = corpus["train"].read_text(encoding="utf-8").splitlines(keepends=True)[:6]
    six.write_text("".join(lines).replace('"audio": "', f'"audio": "{corpus["train"].parent}/'))
    main(["fit", "--model.base_model", "random:micro", "--tune_batch_size", "true",
          "--data.train_manifest", str(six), "--data.batch_size", "2",
          "--data.num_workers", "0", "--data.feature_cache", "off",
          "--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false"])  # fmt: skip
    # No out-of-memory on the CPU: 2 and 4 fit; Lightning stops at 8, the first batch size
    # that is not smaller than the 6 utterances, and keeps it.
    assert "--tune_batch_size: training with --data.batch_size 8" in capsys.readouterr().out
    [ckpt] = (tmp_path / "checkpoints").rglob("*.ckpt")
    state = torch.load(ckpt, weights_only=True)
    assert state["datamodule_hyper_parameters"]["batch_size"] == 8
    assert state["global_step"] == 1  # the trials' steps were undone


def test_tune_batch_size_refuses_batches_by_duration(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--model.base_model", "random:micro", "--tune_batch_size", "true",
              "--data.train_manifest", str(corpus["train"]), "--data.max_duration_s", "20",
              "--data.num_workers", "0", "--trainer.max_steps", "1"])  # fmt: skip
    assert "drop one of the two" in str(exit_.value.code)
