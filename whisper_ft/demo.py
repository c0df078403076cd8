"""`python -m whisper_ft demo`: the whole loop offline, on a CPU, in a few minutes.

Synthetic corpus → base model (pretrained `tiny` if it can be downloaded, else random weights)
→ decode-evaluate → fine-tune → decode-evaluate again → test report → export to a Whisper `.pt`.
"""

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

from whisper_ft.corpora.synthetic import prepare_synthetic
from whisper_ft.data import WhisperDataModule
from whisper_ft.model import ModelLoadError, export_checkpoint
from whisper_ft.module import WhisperFineTuner

DEMO_SENTENCES = 80  # sentences synthesised (~10% each held out for val and test)
DEMO_SPEAKERS = 6  # synthetic voices: 4 train, 1 val, 1 test
BATCH_SIZE = 4  # utterances per step: a 2-core CPU does about one full-model step of tiny in 5 s
PRETRAINED_STEPS = 40  # decoder-only steps from pretrained tiny
RANDOM_STEPS = 60  # whole-model steps from random weights: enough for the loss to fall clearly


@dataclass
class DemoResult:
    base_model: str  # what was fine-tuned: "tiny" or "random:tiny"
    train_loss_first: float  # teacher-forced loss of the first training step
    train_loss_last: float  # mean loss of the last 5 training steps
    val_before: dict  # {"val_loss", "val_cer", "val_wer"} before fine-tuning
    val_after: dict  # the same after
    test_metrics: dict  # test_loss/test_cer/test_wer after fine-tuning
    checkpoint: Path  # Lightning checkpoint (resumable)
    exported: Path  # Whisper .pt for whisper.load_model
    report: Path  # report.md (and its plots) written by the test
    seconds: float  # wall time of the whole demo


class _LossHistory(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def _base_module(offline_model: str) -> tuple[WhisperFineTuner, int]:
    """Pretrained tiny with a frozen encoder, or, offline, `offline_model` trained whole."""
    try:
        return WhisperFineTuner(base_model="tiny"), PRETRAINED_STEPS
    except ModelLoadError as e:
        print(
            f"[demo] could not download Whisper tiny ({e.__cause__ or e}); continuing with "
            f"{offline_model}: random weights, the whole model trained"
        )
    module = WhisperFineTuner(base_model=offline_model, freeze_encoder=False, lr=1e-3)
    return module, RANDOM_STEPS


def run_demo(
    out: Path,
    max_steps: int | None = None,
    n_sentences: int = DEMO_SENTENCES,
    n_speakers: int = DEMO_SPEAKERS,
    offline_model: str = "random:tiny",
) -> DemoResult:
    """Run the demo under `out`; prints each stage and a summary, returns the figures.

    `max_steps` None: 40 decoder-only steps from pretrained tiny, 60 whole-model steps from
    random weights. `offline_model` is what trains when tiny cannot be downloaded.
    """
    started = time.time()

    def stage(message: str) -> None:
        print(f"[demo {time.time() - started:5.0f} s] {message}", flush=True)

    warnings.filterwarnings("ignore", message=r".*does not have many workers")
    pl.seed_everything(0, verbose=False)
    stage(f"synthesising the offline corpus under {out / 'corpus'}")
    manifests = prepare_synthetic(out / "corpus", n_sentences=n_sentences, n_speakers=n_speakers)
    module, default_steps = _base_module(offline_model)
    steps = max_steps or default_steps
    data = WhisperDataModule(
        train_manifest=str(manifests["train"]),
        val_manifest=str(manifests["val"]),
        test_manifest=str(manifests["test"]),
        batch_size=BATCH_SIZE,
        eval_batch_size=8,
        num_workers=1,
    )
    history = _LossHistory()
    quiet = {"enable_model_summary": False, "enable_progress_bar": False, "devices": 1}
    evaluator = pl.Trainer(logger=False, enable_checkpointing=False, **quiet)
    trainer = pl.Trainer(
        max_steps=steps,
        limit_val_batches=0,  # evaluated before and after instead
        enable_checkpointing=False,  # saved once, explicitly, below
        logger=TensorBoardLogger(out, name="runs"),
        log_every_n_steps=5,
        callbacks=[history],
        **quiet,
    )
    stage(f"base model {module.hparams.base_model}; decoding the val set before training")
    val_before = evaluator.validate(module, data, verbose=False)[0]
    stage(f"fine-tuning for {steps} steps of {BATCH_SIZE} utterances")
    trainer.fit(module, data)
    checkpoint = Path(trainer.log_dir) / "demo.ckpt"
    trainer.save_checkpoint(checkpoint)
    stage("decoding the val and test sets after training")
    val_after = evaluator.validate(module, data, verbose=False)[0]
    test_metrics = trainer.test(module, data, verbose=False)[0]
    exported = export_checkpoint(checkpoint, Path(trainer.log_dir) / "demo.pt")
    result = DemoResult(
        base_model=module.hparams.base_model,
        train_loss_first=history.losses[0],
        train_loss_last=sum(history.losses[-5:]) / len(history.losses[-5:]),
        val_before=val_before,
        val_after=val_after,
        test_metrics=test_metrics,
        checkpoint=checkpoint,
        exported=exported,
        report=Path(trainer.log_dir) / "report.md",
        seconds=time.time() - started,
    )
    print_summary(result)
    return result


def print_summary(r: DemoResult) -> None:
    print(
        f"\n== whisper-ft demo: {r.base_model}, {r.seconds:.0f} s ==\n"
        f"train loss      {r.train_loss_first:7.3f} → {r.train_loss_last:7.3f} "
        "(first step → mean of last 5)\n"
        f"val loss        {r.val_before['val_loss']:7.3f} → {r.val_after['val_loss']:7.3f}\n"
        f"val CER         {r.val_before['val_cer']:7.3f} → {r.val_after['val_cer']:7.3f} "
        "(greedy decoding, kana)\n"
        f"test CER / WER  {r.test_metrics['test_cer']:.3f} / {r.test_metrics['test_wer']:.3f}\n"
        f"checkpoint      {r.checkpoint}\n"
        f"exported .pt    {r.exported}  (whisper.load_model works on it)\n"
        f"report          {r.report}  (plots beside it)"
    )
    if r.base_model.startswith("random:"):
        print(
            "note: the model started from random weights, so a few minutes of CPU training "
            "teach it the targets' token statistics (the loss falls) but not yet to listen: "
            "its CER stays high. With internet access the demo fine-tunes pretrained tiny."
        )
