"""Training samples/s and evaluation utterances/s: the seed recipe vs this project, one run.

    python benchmarks/throughput.py --device cpu --size tiny --json /tmp/bench_tiny.json
    python benchmarks/throughput.py --device cuda --size small --json /tmp/bench_small.json

Three paths, on the same synthetic corpus, the same initial weights (`random:<size>`, seeded),
the same batch size and the same number of optimizer steps:

    seed_recipe  benchmarks/seed_recipe.py: 30-s log-mel and kana per item in DataLoader
                 workers, the encoder recomputed every step under no_grad, fp16 AMP on CUDA;
                 evaluation by `model.decode` in batches of 2
    default      WhisperFineTuner + WhisperDataModule with their defaults (feature_cache "auto":
                 the encoder-feature cache of the training and val manifests is built inside
                 the timed fit, cold, under a fresh default_root_dir); evaluation by validation
                 as such a fit runs it from its second epoch on (val features from the cache,
                 built for the eval utterances before timing; batched greedy decoding); also
                 reported: `validate` on a fresh DataModule without a cache, which encodes the
                 audio live (`eval_utts_per_s_live_encoder`)
    cache        the same with `feature_cache=<folder>` built before timing (by an untimed fit);
                 evaluation by validation from the cached eval features

Timing. Each path runs `--warmup-steps` + `--steps` optimizer steps. Training wall time is from
the start of training (the `fit` call; the seed's loop set-up) to the end of the last step,
minus the warm-up steps' own time: start-up (data-check cache read, feature-cache build, worker
start) counts, the first steps' one-time costs do not. The data check's cache is filled before
any path runs, so no path pays the check itself. `train_samples_per_s` = utterances in the
timed steps / that time; `train_samples_per_s_steady` leaves the start-up out (for the default
path: the speed after its cache is built). Evaluation wall time is the whole `trainer.validate`
call (the seed's whole loop) over the eval manifest (the first `--eval-utterances` of the
training manifest), decoded by every path with the same weights: the seed recipe's, trained.
On CUDA the device is synchronised at each mark, never at other steps.

MFU = model FLOPs of the timed part / its wall time / the device's dense 16-bit peak
(`whisper_ft.training.throughput`: formula there; None on the CPU). Live paths count an
encoder forward plus decoder training per utterance, the cache path decoder training only; the
default path adds one encoder forward per cached utterance when it built the cache in the timed
fit.

Writes `--json` (keys `seed_recipe`, `default`, `cache`, each with `train_samples_per_s` and
`eval_utts_per_s`, plus `mfu` when the peak is known; `device`, `size`, `batch_size`, `steps`
and more) and appends a dated row to `--results` (benchmarks/RESULTS.md).
"""

import argparse
import contextlib
import cProfile
import datetime
import io
import json
import os
import platform
import pstats
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
import whisper
from whisper.decoding import DecodingOptions
from whisper.model import Whisper
from whisper.tokenizer import get_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone, not installed
sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_recipe  # noqa: E402
from results_table import insert_rows  # noqa: E402

from whisper_ft import (
    WhisperDataModule,  # noqa: E402
    check_manifest,  # noqa: E402
    default_precision,  # noqa: E402
    load_base_model,  # noqa: E402
    prepare_synthetic,  # noqa: E402
)
from whisper_ft.models.loading import RANDOM_DIMS  # noqa: E402
from whisper_ft.training.throughput import (  # noqa: E402
    encoder_forward_flops,
    peak_flops,
    training_flops_per_sample,
)

PATHS = ("seed_recipe", "default", "cache")
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
# Per device: batch size, timed steps, corpus (sentences, voices), utterances decoded. Steps
# cover 5 epochs (the seed recipe trains 10): the CPU corpus has 40 training utterances, so
# 2 + 48 steps of 4; the CUDA corpus is the whole synthetic one (1,008), 2 + 78 steps of 64.
# Decoding speed is measured on the first `eval_utterances` of the training manifest (the
# corpus's val split has only a handful), with the same weights for every path.
DEFAULTS = {
    "cpu": {
        "batch_size": 4,
        "steps": 48,
        "n_sentences": 50,
        "n_speakers": 3,
        "eval_utterances": 32,
    },
    "cuda": {
        "batch_size": 64,
        "steps": 78,
        "n_sentences": None,
        "n_speakers": 8,
        "eval_utterances": 256,
    },
}
# --quick: seconds on a CPU (the test suite's setting); correctness only, the numbers mean little.
QUICK = {"size": "micro", "batch_size": 2, "steps": 3, "warmup_steps": 1, "num_workers": 0}
QUICK_CORPUS = {"n_sentences": 6, "n_speakers": 3, "eval_utterances": 2}  # 4 training

RESULTS_HEADER = """# Throughput: seed recipe vs this project

Rows appended by `benchmarks/throughput.py` (one per run), e.g.

    python benchmarks/throughput.py --device cpu --size tiny --json /tmp/bench_tiny.json
    python benchmarks/throughput.py --device cuda --size small --json /tmp/bench_small.json

Same synthetic corpus, initial weights (`random:<size>`, seed 0), batch size and optimizer steps
for the three paths: **seed** (the seed recipe, `benchmarks/seed_recipe.py`: per-item 30-s
log-mel and kana in DataLoader workers, encoder under no_grad every step, fp16 AMP on CUDA,
batch-2 `model.decode`), **default** (`WhisperFineTuner` + `WhisperDataModule` defaults: the
encoder-feature cache built inside the timed fit), **cache** (feature cache built before).
Training steps cover 5 epochs of the training manifest (the seed recipe trains 10).

- *train/s*: training utterances per second over the timed steps, start-up (data check, cache
  build, worker start) included, the warm-up steps excluded; *steady*: without start-up.
- *eval/s*: utterances per second of the whole evaluation (seed: batch-2 `model.decode`
  loop, up to 224 tokens; default and cache: `trainer.validate` as fit runs it, val features
  from the cache, batched greedy with the project's sample_len cap, plus its teacher-forced val
  loss; *live*: the default `validate` command on a fresh DataModule, encoder run live).
  Greedy decoding stops at end-of-text or at the cap (seed: 224 tokens, this project:
  1.25 × the longest reference + 8). Every path decodes with the same weights, the
  seed recipe's after its training, on the same utterances (the first of the training
  manifest); the JSON's `eval_tokens_per_utt` gives the decoded lengths.
- *×*: ratio to the seed recipe. *MFU*: model FLOPs/s over the GPU's dense bf16/fp16 peak
  (formula in `whisper_ft/training/throughput.py`); "–" on the CPU, where no peak is defined.

"""


RESULTS_COLUMNS = (
    ("date", "---"),
    ("device", "---"),
    ("torch", "---"),
    ("size", "---"),
    ("batch", "---:"),
    ("steps", "---:"),
    ("seed train/s", "---:"),
    ("default train/s (×)", "---:"),
    ("default steady/s (×)", "---:"),
    ("cache train/s (×)", "---:"),
    ("seed eval/s", "---:"),
    ("default eval/s (×)", "---:"),
    ("cache eval/s (×)", "---:"),
    ("live eval/s (×)", "---:"),
    ("MFU seed / default / cache", "---"),
)


@dataclass
class Clock:
    """Wall-clock marks and model FLOPs of one training run (see the module's docstring)."""

    device: torch.device
    warmup_steps: int
    total_steps: int
    dims: object  # whisper.model.ModelDimensions
    start: float = 0.0  # training started (fit called, or the seed's loop set up)
    first_batch: float | None = None  # the first batch arrived
    timed_start: float | None = None  # the last warm-up step ended
    end: float | None = None  # the last step ended
    samples: int = 0  # utterances in the timed steps
    flops: float = 0.0  # model FLOPs of the timed steps
    cached_batches: int = 0  # timed batches that carried cached features

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def begin(self) -> None:
        self.start = self.now()

    def batch(self) -> None:
        if self.first_batch is None:
            self.first_batch = self.now()

    def step_end(self, step: int, dec_input_ids: torch.Tensor, cached: bool) -> None:
        n_utterances, n_tokens = dec_input_ids.shape
        if step >= self.warmup_steps:
            encoder = "cached" if cached else "frozen"
            self.samples += n_utterances
            self.flops += n_utterances * training_flops_per_sample(self.dims, n_tokens, encoder)
            self.cached_batches += cached
        if step == self.warmup_steps - 1:
            self.timed_start = self.now()
        if step == self.total_steps - 1:
            self.end = self.now()

    def wall_s(self) -> tuple[float, float]:
        """(training wall time: start-up + timed steps, steady: timed steps only)."""
        if self.end is None or self.timed_start is None or self.first_batch is None:
            raise RuntimeError("training stopped before its last step; no timing to report")
        steady = self.end - self.timed_start
        return (self.first_batch - self.start) + steady, steady


class LightningClock(pl.Callback):
    """Feeds a Clock from Lightning's batch hooks; keeps the training losses (as tensors: no
    device synchronisation per step)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.losses: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.clock.batch()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.clock.step_end(trainer.global_step - 1, batch["dec_input_ids"], "features" in batch)
        self.losses.append(outputs["loss"].detach())


@dataclass
class DecodeCount:
    """Utterances and tokens `Whisper.decode` returned inside `counting()`: the seed's loop and
    the module's validation both decode through it, so their decoded lengths can be compared
    (greedy decoding stops at end-of-text or at each path's cap)."""

    utterances: int = 0
    tokens: int = 0  # text tokens, end-of-text not included

    @contextlib.contextmanager
    def counting(self):
        original = Whisper.decode

        def decode(model, mel, options=DecodingOptions(), **kwargs):  # noqa: B008 (as upstream)
            results = original(model, mel, options, **kwargs)
            for result in results if isinstance(results, list) else [results]:
                self.utterances += 1
                self.tokens += len(result.tokens)
            return results

        Whisper.decode = decode
        try:
            yield self
        finally:
            Whisper.decode = original


@dataclass
class PathResult:
    """One path's numbers; the first two (and mfu) are the JSON contract."""

    train_samples_per_s: float
    eval_utts_per_s: float
    train_samples_per_s_steady: float
    train_samples: int
    train_wall_s: float
    train_steady_wall_s: float
    startup_s: float
    eval_utts: int
    eval_wall_s: float
    eval_tokens_per_utt: float  # decoded text tokens per utterance (see DecodeCount)
    model_tflops_per_s: float  # achieved, over the training wall time
    model_tflops_per_s_steady: float
    encoder_feature_cache: str  # what the path's training read: live audio or cached features
    # The machine's 1-min load average before and after the path; this run's own processes
    # (main + DataLoader workers) count too, so only a load above theirs means competition.
    load_average: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # first and last training loss
    mfu: float | None = None
    mfu_steady: float | None = None
    # default path only: `validate` on a fresh DataModule, which encodes the audio live
    eval_utts_per_s_live_encoder: float | None = None


def path_result(
    clock: Clock, extra_flops: float, decoded: DecodeCount, eval_wall_s: float, peak: float | None
) -> PathResult:
    """`extra_flops`: model FLOPs done inside the timed part besides the steps (cache build)."""
    wall, steady = clock.wall_s()
    flops_per_s, steady_flops_per_s = (clock.flops + extra_flops) / wall, clock.flops / steady
    if clock.cached_batches == 0:
        reads = "live audio"
    elif extra_flops:
        reads = "cache built in the timed fit"
    else:
        reads = "cache built before timing"
    result = PathResult(
        train_samples_per_s=clock.samples / wall,
        eval_utts_per_s=decoded.utterances / eval_wall_s,
        train_samples_per_s_steady=clock.samples / steady,
        train_samples=clock.samples,
        train_wall_s=wall,
        train_steady_wall_s=steady,
        startup_s=clock.first_batch - clock.start,
        eval_utts=decoded.utterances,
        eval_wall_s=eval_wall_s,
        eval_tokens_per_utt=decoded.tokens / max(1, decoded.utterances),
        model_tflops_per_s=flops_per_s / 1e12,
        model_tflops_per_s_steady=steady_flops_per_s / 1e12,
        encoder_feature_cache=reads,
    )
    if peak is not None:
        result.mfu, result.mfu_steady = flops_per_s / peak, steady_flops_per_s / peak
    return result


def run_seed(
    args: argparse.Namespace, base: Path, manifests: dict, peak: float | None, eval_weights: Path
):
    """The seed recipe: its own Dataset, collator, loop and batch-2 decode; saves its trained
    weights to `eval_weights`."""
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = whisper.load_model(str(base), device="cpu")  # as the recipe loads its model
    tokenizer = seed_recipe.seed_tokenizer(model)
    n_mels = model.dims.n_mels
    train = seed_recipe.SeedSpeechDataset(
        seed_recipe.read_pairs(manifests["train"]), tokenizer, n_mels
    )
    val = seed_recipe.SeedSpeechDataset(
        seed_recipe.read_pairs(manifests["eval"]), tokenizer, n_mels
    )
    total = args.warmup_steps + args.steps
    clock = Clock(device, args.warmup_steps, total, model.dims)
    clock.begin()
    losses = seed_recipe.train(
        model,
        train,
        batch_size=args.batch_size,
        steps=total,
        device=device,
        num_workers=args.num_workers,
        on_batch=lambda step, batch: clock.batch(),
        on_step_end=lambda step, batch: clock.step_end(step, batch["dec_input_ids"], False),
    )
    with DecodeCount().counting() as decoded:
        start = clock.now()
        seed_recipe.evaluate(model, val, device)
        eval_wall = clock.now() - start
    # The project's paths decode with these same weights: equal work per utterance.
    torch.save({"dims": asdict(model.dims), "model_state_dict": model.state_dict()}, eval_weights)
    result = path_result(clock, 0.0, decoded, eval_wall, peak)
    result.losses = [losses[0], losses[-1]]
    return result


def _trainer(args: argparse.Namespace, root: Path, **kwargs) -> pl.Trainer:
    settings = {
        "accelerator": args.device,
        "devices": 1,
        "precision": default_precision() if args.device == "cuda" else "32-true",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": str(root),
    }
    return pl.Trainer(**(settings | kwargs))


def _module(args: argparse.Namespace, base: Path):
    from whisper_ft import WhisperFineTuner

    pl.seed_everything(args.seed, verbose=False)
    return WhisperFineTuner(base_model=str(base))


def _data(args: argparse.Namespace, **kwargs) -> WhisperDataModule:
    if args.eval_batch_size is not None:  # else the DataModule's default
        kwargs["eval_batch_size"] = args.eval_batch_size
    return WhisperDataModule(batch_size=args.batch_size, num_workers=args.num_workers, **kwargs)


def run_project(
    args: argparse.Namespace,
    base: Path,
    manifests: dict,
    peak: float | None,
    root: Path,
    cache_dir: Path | None,
    eval_weights: Path,
):
    """The project's path: the defaults (`cache_dir` None), or a cache built before timing
    in `cache_dir` (by an untimed one-step fit that also caches the eval features). Decodes
    with the weights in `eval_weights` (the seed recipe's, when it ran)."""
    total = args.warmup_steps + args.steps
    train_only = {"train_manifest": str(manifests["train"])}
    both = {**train_only, "val_manifest": str(manifests["eval"])}
    if cache_dir is not None:
        _trainer(args, root / "prebuild", max_steps=1, limit_val_batches=0).fit(
            _module(args, base), datamodule=_data(args, **both, feature_cache=str(cache_dir))
        )
        # The timed fit reuses both caches; the validation after it reads the eval features.
        data = _data(args, **both, feature_cache=str(cache_dir))
    else:
        # The defaults: "auto" caches the training and the validation features inside the
        # timed fit (it reads the data 5 times), as any default fit with a val manifest does;
        # its val manifest is the corpus's own, whose size against train is realistic.
        data = _data(args, **train_only, val_manifest=str(manifests["val"]))
    module = _module(args, base)
    clock = Clock(torch.device(args.device), args.warmup_steps, total, module.model.dims)
    marks = LightningClock(clock)
    trainer = _trainer(args, root / "fit", max_steps=total, limit_val_batches=0, callbacks=[marks])
    clock.begin()
    trainer.fit(module, datamodule=data)
    built_in_fit = cache_dir is None and clock.cached_batches > 0
    cached = sum(len(data.datasets[split]) for split in ("train", "val"))
    extra_flops = cached * encoder_forward_flops(module.model.dims)

    weights = torch.load(eval_weights, map_location="cpu", weights_only=True)  # never runs code
    module.model.load_state_dict(weights["model_state_dict"])
    # Validation as fit runs it every epoch after the first: val features from the cache (a
    # default fit caches its val manifest as it does the training one). The cache path's fit
    # already holds the eval features; the default path builds them first, untimed.
    if cache_dir is None:
        eval_cache = {"val_manifest": str(manifests["eval"]), "feature_cache": str(root / "eval")}
        _timed_validate(args, root / "validate-build", module, _data(args, **eval_cache))
        data = _data(args, **eval_cache)
    decoded, eval_wall = _timed_validate(args, root / "validate", module, data)
    result = path_result(clock, extra_flops if built_in_fit else 0.0, decoded, eval_wall, peak)
    result.losses = [float(marks.losses[0]), float(marks.losses[-1])]
    if cache_dir is None:  # `python -m whisper_ft validate`: a fresh DataModule, live encoder
        live = _data(args, val_manifest=str(manifests["eval"]))
        decoded, live_wall = _timed_validate(args, root / "validate-live", module, live)
        result.eval_utts_per_s_live_encoder = decoded.utterances / live_wall
    return result


def _timed_validate(args, root: Path, module, data: WhisperDataModule) -> tuple:
    """(DecodeCount, wall seconds) of one `trainer.validate` (loss and decoding)."""
    evaluator = _trainer(args, root)
    with DecodeCount().counting() as decoded:
        start = time.perf_counter()
        evaluator.validate(module, datamodule=data, verbose=False)
        if args.device == "cuda":
            torch.cuda.synchronize()
        return decoded, time.perf_counter() - start


def _profiled(enabled: bool, label: str, fn, *fn_args):
    """fn(*fn_args), under cProfile when `enabled`: prints the top entries (main process;
    DataLoader workers are not in it)."""
    if not enabled:
        return fn(*fn_args)
    profiler = cProfile.Profile()
    result = profiler.runcall(fn, *fn_args)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    print(f"\n--- profile: {label} (main process, by own time) ---\n{out.getvalue()}")
    return result


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's model name (/proc/cpuinfo, else platform's) and the
    number of threads torch uses."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {torch.get_num_threads()} threads"


def _ratio(value: float, seed: float) -> float:
    return value / seed if seed else float("nan")


def print_table(report: dict) -> None:
    seed = report["seed_recipe"]
    rows = [
        ("path", "train/s", "× seed", "steady/s", "eval utt/s", "× seed", "TFLOP/s", "MFU"),
    ]
    for path in PATHS:
        r = report[path]
        rows.append(
            (
                path,
                f"{r['train_samples_per_s']:.2f}",
                f"{_ratio(r['train_samples_per_s'], seed['train_samples_per_s']):.2f}",
                f"{r['train_samples_per_s_steady']:.2f}",
                f"{r['eval_utts_per_s']:.2f}",
                f"{_ratio(r['eval_utts_per_s'], seed['eval_utts_per_s']):.2f}",
                f"{r['model_tflops_per_s']:.3f}",
                f"{r['mfu']:.1%}" if "mfu" in r else "–",
            )
        )
    live = report["default"]["eval_utts_per_s_live_encoder"]
    ratio = f"{_ratio(live, seed['eval_utts_per_s']):.2f}"
    rows.append(("validate, live", "", "", "", f"{live:.2f}", ratio, "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(
        f"\n{report['device_name']} ({report['device']}), random:{report['size']}, batch "
        f"{report['batch_size']}, {report['steps']} timed steps (+{report['warmup_steps']} warm-up)"
    )
    for row in rows:
        print(
            "  ".join(
                cell.rjust(w) if i else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def results_row(report: dict) -> str:
    seed = report["seed_recipe"]

    def with_ratio(path: str, key: str, seed_key: str | None = None) -> str:
        value = report[path][key]
        return f"{value:.2f} ({_ratio(value, seed[seed_key or key]):.2f}×)"

    mfu = " / ".join(f"{report[p]['mfu']:.1%}" if "mfu" in report[p] else "–" for p in PATHS)
    cells = [
        report["date"],
        report["device_name"],
        report["torch"],
        report["size"],
        str(report["batch_size"]),
        str(report["steps"]),
        f"{seed['train_samples_per_s']:.2f}",
        with_ratio("default", "train_samples_per_s"),
        with_ratio("default", "train_samples_per_s_steady", "train_samples_per_s"),
        with_ratio("cache", "train_samples_per_s"),
        f"{seed['eval_utts_per_s']:.2f}",
        with_ratio("default", "eval_utts_per_s"),
        with_ratio("cache", "eval_utts_per_s"),
        with_ratio("default", "eval_utts_per_s_live_encoder", "eval_utts_per_s"),
        mfu,
    ]
    return "| " + " | ".join(cells) + " |\n"


def append_results(path: Path, report: dict) -> None:
    """The run's row, into the throughput table of `path` (other benchmarks' tables kept)."""
    names, aligns = zip(*RESULTS_COLUMNS, strict=True)
    header = RESULTS_HEADER + f"| {' | '.join(names)} |\n| {' | '.join(aligns)} |\n"
    insert_rows(path, "# Throughput:", header, [results_row(report)])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--size", choices=list(RANDOM_DIMS), default=None, help="random:<size> model (tiny)"
    )
    parser.add_argument("--batch-size", type=int, help="utterances per step (cpu 4, cuda 64)")
    parser.add_argument(
        "--eval-batch-size", type=int, help="the project's eval batch (default: its default)"
    )
    parser.add_argument("--steps", type=int, help="timed optimizer steps (cpu 28, cuda 40)")
    parser.add_argument(
        "--warmup-steps", type=int, default=None, help="untimed steps first (2; at least 1)"
    )
    parser.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (2)")
    parser.add_argument(
        "--corpus",
        type=Path,
        help="folder with train.jsonl and val.jsonl "
        "(default: a synthetic corpus made in --work-dir)",
    )
    parser.add_argument("--n-sentences", type=int, help="synthetic corpus sentences")
    parser.add_argument("--n-speakers", type=int, help="synthetic corpus voices")
    parser.add_argument(
        "--eval-utterances", type=int, help="utterances decoded per path (cpu 32, cuda 256)"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=REPO / "checkpoints" / "benchmarks",
        help="corpus, weights and run folders (checkpoints/ is ignored by git)",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown table to append to")
    parser.add_argument("--no-results", action="store_true", help="append no row")
    parser.add_argument("--seed", type=int, default=0, help="weights and shuffling")
    parser.add_argument(
        "--paths", nargs="+", choices=PATHS, default=list(PATHS), help=argparse.SUPPRESS
    )
    parser.add_argument("--profile", action="store_true", help="cProfile each path (main process)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="micro model, 3 steps, a 6-sentence corpus: seconds (tests)",
    )
    args = parser.parse_args(argv)
    preset = {**DEFAULTS[args.device], "size": "tiny", "warmup_steps": 2, "num_workers": 2}
    if args.quick:
        preset |= QUICK | QUICK_CORPUS
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.warmup_steps < 1 or args.steps < 1 or args.batch_size < 1:
        parser.error("--warmup-steps, --steps and --batch-size must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.corpus is None:
        corpus = args.work_dir / f"corpus-{args.n_sentences or 'all'}x{args.n_speakers}"
        manifests = prepare_synthetic(
            corpus, n_sentences=args.n_sentences, n_speakers=args.n_speakers
        )
    else:
        manifests = {split: args.corpus / f"{split}.jsonl" for split in ("train", "val")}
    # Decoding is timed on the first utterances of the training manifest: the same for every
    # path, and more of them than the synthetic val split holds (leakage does not matter here).
    lines = manifests["train"].read_text(encoding="utf-8").splitlines(keepends=True)
    manifests["eval"] = manifests["train"].with_name(f"eval{args.eval_utterances}.jsonl")
    manifests["eval"].write_text("".join(lines[: args.eval_utterances]), encoding="utf-8")

    torch.manual_seed(args.seed)
    model = load_base_model(f"random:{args.size}")
    base = args.work_dir / f"random-{args.size}-seed{args.seed}.pt"  # one set of weights for all
    torch.save({"dims": asdict(model.dims), "model_state_dict": model.state_dict()}, base)
    tokenizer = get_tokenizer(
        True, num_languages=model.num_languages, language="ja", task="transcribe"
    )
    for split in ("train", "eval"):  # fills the data check's cache: no path pays it
        check_manifest(manifests[split], tokenizer=tokenizer, n_text_ctx=model.dims.n_text_ctx)
    peak = peak_flops(device)

    report: dict = {
        "device": args.device,
        "device_name": device_name(args.device),
        "size": args.size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "num_workers": args.num_workers,
        "peak_flops": peak,
        "manifests": {k: str(v) for k, v in manifests.items()},
        "command": "python benchmarks/throughput.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
    }
    eval_weights = base  # replaced by the seed recipe's trained weights once it ran
    with tempfile.TemporaryDirectory(dir=args.work_dir, prefix="runs-") as runs:
        runs = Path(runs)
        for path in args.paths:
            print(f"\n=== {path} ===", flush=True)
            load_before = os.getloadavg()[0]
            if path == "seed_recipe":
                eval_weights = runs / "seed-trained.pt"
                result = _profiled(
                    args.profile, path, run_seed, args, base, manifests, peak, eval_weights
                )
            else:
                cache_dir = runs / "feature_cache" if path == "cache" else None
                result = _profiled(
                    args.profile,
                    path,
                    run_project,
                    args,
                    base,
                    manifests,
                    peak,
                    runs / path,
                    cache_dir,
                    eval_weights,
                )
            # Other processes on the machine slow a path down: the load says how much there was.
            result.load_average = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            report[path] = {k: v for k, v in asdict(result).items() if v is not None}
    if all(path in report for path in PATHS):
        print_table(report)
        if not args.no_results:
            append_results(args.results, report)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


if __name__ == "__main__":
    main()
