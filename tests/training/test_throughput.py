"""FLOP counting, device peaks, the ThroughputLogger callback, and benchmarks/throughput.py."""

import csv
import datetime
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from whisper.model import disable_sdpa

import whisper_ft.training.throughput as throughput
from whisper_ft.data.datamodule import WhisperDataModule
from whisper_ft.models.loading import RANDOM_DIMS, load_base_model
from whisper_ft.training.throughput import (
    ThroughputLogger,
    decoder_forward_flops,
    decoder_training_flops,
    encoder_forward_flops,
    peak_flops,
    peak_flops_of,
    training_flops_per_sample,
)

REPO = Path(__file__).resolve().parents[2]
BENCHMARK = REPO / "benchmarks" / "throughput.py"


def test_whisper_small_matches_the_issue_figures():
    small = RANDOM_DIMS["small"]
    assert encoder_forward_flops(small) == pytest.approx(344e9, rel=0.03)
    assert decoder_training_flops(small, 64) == pytest.approx(149e9, rel=0.03)
    # 3 × forward would count the k/v projections' input gradient the frozen encoder never needs.
    assert 3 * decoder_forward_flops(small, 64) == pytest.approx(192e9, rel=0.01)


@pytest.mark.parametrize(("size", "encoder_gflop"), [("tiny", 36.94), ("base", 87.37)])
def test_encoder_flops_of_smaller_sizes(size, encoder_gflop):
    assert encoder_forward_flops(RANDOM_DIMS[size]) / 1e9 == pytest.approx(encoder_gflop, abs=0.01)


def test_formula_equals_torch_flop_counter_on_a_real_model():
    """Every matmul and convolution of a real forward/backward, counted by torch (attention
    as explicit matmuls: the counter does not see the CPU's fused kernel)."""
    torch.manual_seed(0)
    model = load_base_model("random:micro")
    model.encoder.requires_grad_(False)
    dims, n_tokens = model.dims, 24
    mel, tokens = torch.randn(1, dims.n_mels, 3000), torch.randint(0, 50000, (1, n_tokens))
    with disable_sdpa():
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            features = model.encoder(mel)
        assert counter.get_total_flops() == encoder_forward_flops(dims)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.decoder(tokens, features)
        assert counter.get_total_flops() == decoder_forward_flops(dims, n_tokens)
        with FlopCounterMode(display=False) as counter:
            model.decoder(tokens, features).sum().backward()
        assert counter.get_total_flops() == decoder_training_flops(dims, n_tokens)
        features.requires_grad_(True)
        with FlopCounterMode(display=False) as counter:
            model.decoder(tokens, features).sum().backward()
        assert counter.get_total_flops() == decoder_training_flops(dims, n_tokens, True)


def test_flops_per_sample_by_what_the_step_does_with_audio():
    dims = RANDOM_DIMS["tiny"]
    encoder, decoder = encoder_forward_flops(dims), decoder_training_flops(dims, 32)
    assert training_flops_per_sample(dims, 32, "cached") == decoder
    assert training_flops_per_sample(dims, 32, "frozen") == encoder + decoder
    assert training_flops_per_sample(dims, 32, "trained") == 3 * (
        encoder + decoder_forward_flops(dims, 32)
    )
    with pytest.raises(ValueError, match="'frozen', 'cached' or 'trained'"):
        training_flops_per_sample(dims, 32, "live")


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H100 NVL", 835),
        ("NVIDIA H200", 989),
        ("NVIDIA H200 NVL", 835),
        ("NVIDIA A100-SXM4-80GB", 312),
        ("NVIDIA A100 80GB PCIe", 312),
        ("NVIDIA A10G", 125),
        ("NVIDIA L4", 121),
        ("Tesla T4", 65),
        ("Tesla V100-SXM2-16GB", 125),
        ("Tesla V100-PCIE-32GB", 112),
        ("NVIDIA GeForce RTX 4090", 165.2),
        ("NVIDIA L40S", None),  # not the L4
        ("NVIDIA GeForce RTX 3090", None),
    ],
)
def test_peak_table(name, tflops):
    peak = peak_flops_of(name)
    assert peak == (None if tflops is None else pytest.approx(tflops * 1e12))


def test_no_peak_for_the_cpu():
    assert peak_flops("cpu") is None
    assert peak_flops(torch.device("cpu")) is None


class FakeModule:
    """What ThroughputLogger reads from a LightningModule, and a record of what it logs."""

    def __init__(self, dims):
        self.model = SimpleNamespace(dims=dims, encoder=torch.nn.Linear(2, 2).requires_grad_(False))
        self.device = torch.device("cpu")
        self.logged: list[tuple[str, float]] = []

    def log(self, name, value, **kwargs):
        self.logged.append((name, value))


def run_fake_steps(monkeypatch, batches: list[dict], every: int, step_s: float = 0.5):
    """Drive the callback through `batches`, one optimizer step each, every clock reading
    `step_s` after the one before; returns what it logged."""
    clock = iter(np.arange(1000) * step_s)
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: float(next(clock)))
    module = FakeModule(RANDOM_DIMS["micro"])
    trainer = SimpleNamespace(log_every_n_steps=every, world_size=1, global_step=0)
    callback = ThroughputLogger()
    callback.on_train_start(trainer, module)
    for batch in batches:
        callback.on_train_batch_start(trainer, module, batch, 0)
        trainer.global_step += 1
        callback.on_train_batch_end(trainer, module, None, batch, 0)
    return module.logged


def test_logger_samples_per_s_from_the_wall_clock(monkeypatch):
    batch = {"dec_input_ids": torch.zeros(4, 16, dtype=torch.long), "audio": torch.zeros(4, 8)}
    logged = run_fake_steps(monkeypatch, [batch] * 4, every=2)
    # Window 1: start at clock 0, end at 0.5 (one reading per step end) → 8 utterances / 0.5 s.
    assert [name for name, _ in logged] == ["samples_per_s", "samples_per_s"]
    assert logged[0][1] == pytest.approx(8 / 0.5)
    assert all(value > 0 for _, value in logged)


def test_logger_mfu_counts_the_encoder_only_for_live_audio(monkeypatch):
    monkeypatch.setattr(throughput, "peak_flops", lambda device: 1e12)
    dims = RANDOM_DIMS["micro"]
    live = {"dec_input_ids": torch.zeros(2, 16, dtype=torch.long), "audio": torch.zeros(2, 8)}
    cached = {"dec_input_ids": torch.zeros(2, 16, dtype=torch.long), "features": torch.zeros(2)}
    for batch, work in ((live, "frozen"), (cached, "cached")):
        logged = dict(run_fake_steps(monkeypatch, [batch], every=1))
        expected = 2 * training_flops_per_sample(dims, 16, work) / 0.5 / 1e12
        assert logged["mfu"] == pytest.approx(expected)
        assert logged["samples_per_s"] == pytest.approx(2 / 0.5)


def test_logger_during_a_real_fit(micro, corpus, make_trainer, tmp_path, monkeypatch):
    monkeypatch.setattr(throughput, "peak_flops", lambda device: 1e12)
    data = WhisperDataModule(
        train_manifest=str(corpus["train"]), batch_size=4, num_workers=0, feature_cache="off"
    )
    # no callback given: WhisperFineTuner.configure_callbacks attaches it to every fit
    trainer = make_trainer(max_steps=4, log_every_n_steps=2)
    trainer.fit(micro, datamodule=data)
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    logged = [row for row in rows if row.get("samples_per_s")]
    assert [int(row["step"]) for row in logged] == [1, 3]  # global steps 2 and 4, 0-based
    for row in logged:
        assert 0 < float(row["samples_per_s"]) < math.inf
        assert 0 < float(row["mfu"]) < 1


def load_seed_recipe():
    spec = importlib.util.spec_from_file_location(
        "seed_recipe", REPO / "benchmarks" / "seed_recipe.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_recipe_keeps_its_collator_and_optimizer_as_they_were(corpus):
    seed = load_seed_recipe()
    model = load_base_model("random:micro")
    tokenizer = seed.seed_tokenizer(model)
    dataset = seed.SeedSpeechDataset(seed.read_pairs(corpus["val"]), tokenizer)
    items = [dataset[0], dataset[1]]
    assert items[0]["input_ids"].shape == (80, 3000)
    assert items[0]["labels"] == items[0]["dec_input_ids"][1:] + [tokenizer.eot]
    batch = seed.seed_collate(items)
    short = min(range(2), key=lambda i: len(items[i]["dec_input_ids"]))
    n = len(items[short]["dec_input_ids"])
    assert batch["input_ids"].shape == (2, 80, 3000)
    assert (batch["dec_input_ids"][short, n:] == 50257).all()
    assert (batch["labels"][short, n:] == -100).all()
    optimizer, _ = seed.seed_optimizer(model, total_steps=10)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = [names[id(p)] for p in optimizer.param_groups[1]["params"]]
    assert no_decay and all(name.endswith(".bias") for name in no_decay)  # no LayerNorm weight


def test_benchmark_smallest_setting_end_to_end(tmp_path):
    out, results = tmp_path / "bench.json", tmp_path / "RESULTS.md"
    command = [
        sys.executable,
        str(BENCHMARK),
        "--device",
        "cpu",
        "--quick",
        "--work-dir",
        str(tmp_path / "work"),
        "--json",
        str(out),
        "--results",
        str(results),
    ]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert (report["device"], report["size"], report["batch_size"], report["steps"]) == (
        "cpu",
        "micro",
        2,
        3,
    )
    for path in ("seed_recipe", "default", "cache"):
        assert report[path]["train_samples_per_s"] > 0
        assert report[path]["eval_utts_per_s"] > 0
        assert report[path]["train_samples"] == 3 * 2
        assert "mfu" not in report[path]  # no peak for a CPU
    assert report["seed_recipe"]["encoder_feature_cache"] == "live audio"
    assert report["default"]["encoder_feature_cache"] == "cache built in the timed fit"
    assert report["cache"]["encoder_feature_cache"] == "cache built before timing"
    assert "seed_recipe" in run.stdout and "× seed" in run.stdout  # the printed table
    lines = results.read_text().splitlines()
    rows = [line for line in lines if line.startswith(f"| {datetime.date.today().isoformat()}")]
    assert len(rows) == 1
    assert "| micro | 2 | 3 |" in rows[0]
    assert lines[0].startswith("# Throughput")
