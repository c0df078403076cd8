"""The LightningModule: teacher-forced decoder loss, AdamW with warm-up, evaluation by decoding."""

import csv
import json
import warnings
from dataclasses import asdict
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from whisper.audio import SAMPLE_RATE
from whisper.model import Whisper
from whisper.tokenizer import get_tokenizer

from whisper_ft.audio import log_mel_batch
from whisper_ft.augment import SpecAugment, spec_augment, valid_frame_counts
from whisper_ft.collate import IGNORE_INDEX
from whisper_ft.decoding import (
    decode_texts,
    decoding_options,
    non_katakana_tokens,
    sample_len_for,
)
from whisper_ft.metrics import CorpusErrorRates, UtteranceScore, rates_for_json, score
from whisper_ft.model import (
    TrainParts,
    add_lora,
    checkpoint_blocks,
    freeze,
    load_base_model,
    select_trainable,
)
from whisper_ft.report import write_report
from whisper_ft.text import LongVowel
from whisper_ft.throughput import ThroughputLogger

MAX_LISTED_IDS = 8  # utterance ids named per batch in a failure message
CPU_OUT_OF_MEMORY = "DefaultCPUAllocator: can't allocate memory"  # in torch's RuntimeError


class NonFiniteLossError(RuntimeError):
    """Training stopped after `max_nonfinite_steps` consecutive steps with a nan/inf loss; the
    message names the steps' utterances and what to change."""


WER_MEANING = (
    "word error rate over whitespace-separated words after normalisation; Japanese is written "
    "without spaces, so each Japanese utterance is one word and WER is the utterance error rate"
)


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over label tokens, skipping padding (-100).

    logits : torch.Tensor, shape = (batch, n_tokens, n_vocab)
    labels : torch.Tensor, shape = (batch, n_tokens)
    """
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


def decay_parameter_names(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Names of trainable parameters (with weight decay, without): biases and LayerNorm weights
    (Whisper's `*_ln`, `ln`, `ln_post`) get none; frozen parameters are left out."""
    decay, no_decay = [], []
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            full_name = f"{module_name}.{name}" if module_name else name
            exempt = name == "bias" or isinstance(module, torch.nn.LayerNorm)
            (no_decay if exempt else decay).append(full_name)
    return decay, no_decay


def adamw(param_groups: list[dict], **settings) -> torch.optim.AdamW:
    """AdamW with its fused kernel where torch has one for the parameters' device (CUDA; CPU
    from torch 2.4): one kernel for all tensors instead of a dozen small ops per tensor; on the
    tiny decoder's 30M parameters on a 2-core CPU, 14 ms per step instead of 131 (torch's
    default there) or 81 (foreach). Else torch's default implementation."""
    try:
        return torch.optim.AdamW(param_groups, fused=True, **settings)
    except (RuntimeError, ValueError):  # no fused kernel for this device or dtype
        return torch.optim.AdamW(param_groups, **settings)


def warmup_then_linear_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR factor for optimizer step `step` (0-based): rises linearly to 1 over `warmup_steps`
    (first step already > 0), then falls linearly towards 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


class WhisperFineTuner(pl.LightningModule):
    """Fine-tunes a Whisper model: frozen encoder (by default), teacher-forced decoder.

    Validation and test decode for real (batched greedy `whisper.DecodingOptions`) and log
    corpus-level CER/WER besides the teacher-forced loss.

    Args:
        base_model: Whisper name (tiny, base, small, …; downloaded and cached), path to a
            Whisper .pt or a whisper-ft .ckpt, or random:<size> (random weights; sizes micro,
            tiny, base, small, medium, large, large-v3, turbo) for offline runs.
        language: Language token of the targets and of decoding (ja, en, …).
        task: Task token: transcribe or translate.
        freeze_encoder: Train only the decoder (encoder without gradients, in eval mode);
            false trains the whole model.
        lr: AdamW peak learning rate. 1e-4 generalised best to unseen sentences and voices in
            the adaptation sweep (benchmarks/RESULTS.md); the seed recipe's 5e-4 made
            pretrained base worse than not adapting.
        weight_decay: AdamW weight decay; biases and LayerNorm weights get none.
        adam_eps: AdamW epsilon.
        lr_warmup_steps: Optimizer steps of linear warm-up, then linear decay to the
            Trainer's estimated last step.
        decode_every_n_val: Decode (val_cer, val_wer) on every Nth validation run; 0 never.
            Decoding costs far more than the teacher-forced val_loss, which is always logged.
        spec_augment: SpecAugment frequency/time masks on the training log-mel (prob 0: off).
        long_vowel: Scoring: the long-vowel mark ー kept, dropped, or written as the vowel
            before it (see text.normalize).
        compile_decoder: torch.compile the decoder for training steps (decoding stays eager:
            its kv-cache hooks change shapes every token). Pays on GPUs over long runs.
        gradient_checkpointing: Recompute each trainable block's activations in backward
            instead of storing them: less memory for full fine-tuning of big models, ~1/3
            more compute.
        max_nonfinite_steps: A training step whose loss is nan or inf is skipped (no update)
            and counted (train_nonfinite_steps); this many in a row stop training with a
            message naming their utterances. 1 stops at the first.
        train_parts: Which decoder weights train: the whole decoder, the cross-attention of
            every block, or the last `last_layers` blocks (with the final layer norm).
        last_layers: Blocks trained with train_parts last_layers.
        lora_rank: LoRA adapters of this rank on the decoder's attention projections, and
            only they train (needs peft); 0: none. Merged into the weights on export.
        lora_alpha: LoRA scaling numerator (updates are scaled by lora_alpha / lora_rank).
        kana_decoding: With kana targets, decode with every token that cannot be part of a
            katakana text suppressed (`decoding.non_katakana_tokens`).
    """

    def __init__(
        self,
        base_model: str = "tiny",
        language: str = "ja",
        task: str = "transcribe",
        freeze_encoder: bool = True,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        adam_eps: float = 1e-8,
        lr_warmup_steps: int = 20,
        decode_every_n_val: int = 1,
        spec_augment: SpecAugment = SpecAugment(),  # noqa: B008 (frozen: one shared default is safe)
        long_vowel: LongVowel = "keep",
        compile_decoder: bool = False,
        gradient_checkpointing: bool = False,
        max_nonfinite_steps: int = 3,
        train_parts: TrainParts = "decoder",
        last_layers: int = 2,
        lora_rank: int = 0,
        lora_alpha: float = 32.0,
        kana_decoding: bool = False,
    ) -> None:
        super().__init__()
        if max_nonfinite_steps < 1:
            raise ValueError(f"max_nonfinite_steps must be at least 1, got {max_nonfinite_steps}")
        if isinstance(spec_augment, dict):  # as stored in a checkpoint's hyperparameters
            spec_augment = SpecAugment(**spec_augment)
        self.spec_augment = spec_augment or SpecAugment()
        self.save_hyperparameters(ignore=["spec_augment"])
        # A plain dict: checkpoints stay loadable with torch.load(weights_only=True).
        self.hparams["spec_augment"] = asdict(self.spec_augment)
        self.model: Whisper = load_base_model(base_model)
        self.tokenizer = get_tokenizer(
            self.model.is_multilingual,
            num_languages=self.model.num_languages,
            language=language,
            task=task,
        )
        if freeze_encoder:
            freeze(self.model.encoder)
        select_trainable(self.model.decoder, train_parts, last_layers)
        if lora_rank:
            add_lora(self.model.decoder, lora_rank, lora_alpha)
        if gradient_checkpointing:
            checkpoint_blocks(self.model)  # a frozen encoder runs without gradients: unaffected
        # Kept outside nn.Module's registry: as a submodule it would add a second copy of every
        # decoder weight (`_orig_mod.…`) to the state dict and to checkpoints.
        compiled = torch.compile(self.model.decoder) if compile_decoder else self.model.decoder
        object.__setattr__(self, "train_decoder", compiled)
        self.val_rates = CorpusErrorRates()
        self.test_rates = CorpusErrorRates()
        self.test_records: list[tuple[str, str, UtteranceScore]] = []  # (id, speaker, score)
        self._val_runs = 0
        self.skipped: dict[str, int] = {"train": 0, "val": 0, "test": 0}  # unreadable audio
        self.nonfinite_steps = 0  # training steps skipped for a nan/inf loss, in all
        self._nonfinite_run: list[tuple[int, list[str]]] = []  # (step, ids), consecutive ones
        self._in_flight: dict | None = None  # the last batch a step began: for OOM messages

    def train(self, mode: bool = True) -> "WhisperFineTuner":
        # Lightning switches the whole module to train mode each epoch; a frozen encoder stays
        # in eval mode so it computes exactly what it computed before fine-tuning.
        super().train(mode)
        if self.hparams.freeze_encoder:
            self.model.encoder.eval()
        return self

    def on_fit_start(self) -> None:
        if self.hparams.freeze_encoder:
            # Runs before Lightning's check for modules in eval mode, which would warn at every
            # fit about the encoder that train() keeps in eval mode on purpose.
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")

    def encode(
        self, audio: torch.Tensor, audio_lengths: torch.Tensor | None = None, augment: bool = False
    ) -> torch.Tensor:
        """Log-mel on this module's device, SpecAugment when `augment`, then the encoder.

        audio : torch.Tensor, shape = (batch, n_samples), 16-kHz waveforms padded to 30 s
        audio_lengths : torch.Tensor, shape = (batch,), real samples per row (time masks stay
            inside them); None: the whole row
        returns : torch.Tensor, shape = (batch, n_audio_ctx, n_audio_state)
        """
        mel = log_mel_batch(audio, self.model.dims.n_mels)
        if augment and self.spec_augment.enabled:
            valid = None if audio_lengths is None else valid_frame_counts(audio_lengths)
            mel = spec_augment(mel, self.spec_augment, valid)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.hparams.freeze_encoder):
            return self.model.encoder(mel)

    def forward(self, audio: torch.Tensor, dec_input_ids: torch.Tensor) -> torch.Tensor:
        """audio (batch, n_samples), dec_input_ids (batch, n_tokens) → logits (batch, n_tokens,
        n_vocab)."""
        return self.model.decoder(dec_input_ids, self.encode(audio))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        self._note_in_flight(batch, "training")
        if not self._count_skipped(batch, "train"):  # every file of the batch became unreadable
            self._loss_is_finite(torch.zeros(()), [])  # still takes part in the stop decision
            return self._skipped_step()
        features = self.features(batch, augment=True)
        loss = token_loss(self.train_decoder(batch["dec_input_ids"], features), batch["labels"])
        if not self._loss_is_finite(loss, batch["ids"]):
            return self._skipped_step()
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["ids"]))
        return loss

    def _skipped_step(self) -> torch.Tensor | None:
        """What a training step that must not learn returns. One process: None, and Lightning
        skips backward and the optimizer (and GradScaler) step. Under DDP every process must
        run backward each step (gradients are averaged there) and Lightning refuses None: a
        zero loss over the trainable parameters, so this process adds zero gradients to the
        step's average and the other processes' batches still count."""
        if not self._distributed():
            return None
        return sum((p * 0).sum() for p in self.parameters() if p.requires_grad)

    def _distributed(self) -> bool:
        """Several processes train (a step called outside a Trainer is one process)."""
        return self._trainer is not None and self.trainer.world_size > 1

    def _loss_is_finite(self, loss: torch.Tensor, ids: list[str]) -> bool:
        """Counts a nan/inf loss and warns; raises NonFiniteLossError at the
        `max_nonfinite_steps`-th in a row. Costs one host-device sync per step on a GPU (the
        decision to skip needs the value); the progress bar's train_loss syncs as often."""
        finite = bool(torch.isfinite(loss).item())
        if finite:
            self._nonfinite_run = []
        else:
            self.nonfinite_steps += 1
            self._nonfinite_run.append((self.global_step, list(ids)))
            self.log("train_nonfinite_steps", float(self.nonfinite_steps), reduce_fx="max")
        stop = len(self._nonfinite_run) >= self.hparams.max_nonfinite_steps
        if self._distributed():  # all processes stop together, or none waits forever
            stop = self.trainer.strategy.reduce_boolean_decision(stop, all=False)
        if finite and not stop:
            return True
        if stop and not self._nonfinite_run:  # this process's losses were fine
            raise NonFiniteLossError(
                "training stopped: another process's loss was nan or inf for "
                f"{self.hparams.max_nonfinite_steps} steps in a row (its error names them)."
            )
        if stop:
            raise NonFiniteLossError(
                nonfinite_message(self._nonfinite_run, self.hparams.lr, str(self.trainer.precision))
            )
        warnings.warn(
            f"step {self.global_step}: training loss is {loss.item()}; the step is skipped "
            f"(utterances {listed(ids)}).",
            stacklevel=2,
        )
        return False

    def _note_in_flight(self, batch: dict, stage: str) -> None:
        # Shapes only (and the small (B,) lengths tensor): holding the batch itself would keep
        # its audio in memory past the step.
        self._in_flight = {
            "stage": stage,
            "n": len(batch["ids"]),
            "tokens": tuple(batch["dec_input_ids"].shape),
            "audio_lengths": batch.get("audio_lengths"),
            "cached": "features" in batch,
        }

    def out_of_memory_advice(self) -> str:
        """What was in flight when memory ran out, and what to try; '' before any step."""
        return out_of_memory_advice(self._in_flight) if self._in_flight else ""

    def features(self, batch: dict, augment: bool = False) -> torch.Tensor:
        """The batch's encoder output: read from the encoder-feature cache when the batch
        carries `features` (stored float16), else encoded from its `audio`.

        returns : torch.Tensor, shape = (batch, n_audio_ctx, n_audio_state), float32
        """
        if "features" in batch:
            return batch["features"].float()  # autocast picks the decoder's compute dtype
        return self.encode(batch["audio"], batch.get("audio_lengths"), augment=augment)

    def _count_skipped(self, batch: dict, stage: str) -> int:
        """Counts the batch's unreadable items (the dataset warned with their files); returns
        how many utterances are left to use."""
        self.skipped[stage] += len(batch.get("skipped", ()))
        if self.skipped[stage]:
            self.log(f"{stage}_skipped_audio", float(self.skipped[stage]), reduce_fx="max")
        return len(batch["ids"])

    def _evaluate(self, batch: dict, stage: str, decode: bool) -> list[UtteranceScore]:
        self._note_in_flight(batch, {"val": "validation", "test": "test"}[stage])
        if not self._count_skipped(batch, stage):
            return []
        features = self.features(batch)
        loss = token_loss(self.model.decoder(batch["dec_input_ids"], features), batch["labels"])
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=len(batch["ids"]))
        if not decode:
            return []
        sample_len = sample_len_for(
            (batch["labels"] != IGNORE_INDEX).sum(dim=1), self.model.dims.n_text_ctx
        )
        target, long_vowel = batch.get("target", "kana"), self.hparams.long_vowel
        kana_only = self.hparams.kana_decoding and target == "kana"
        suppress = non_katakana_tokens(self.tokenizer) if kana_only else None
        options = decoding_options(
            self.hparams.language, self.hparams.task, features.device, sample_len, suppress
        )
        hypotheses = decode_texts(self.model, features, options)
        return [
            score(ref, hyp, target=target, long_vowel=long_vowel)
            for ref, hyp in zip(batch["texts"], hypotheses, strict=True)
        ]

    def _decoding_this_validation(self) -> bool:
        every = self.hparams.decode_every_n_val
        return every > 0 and not self.trainer.sanity_checking and self._val_runs % every == 0

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_rates.update(self._evaluate(batch, "val", self._decoding_this_validation()))

    def on_validation_epoch_end(self) -> None:
        if self._decoding_this_validation():
            rates = self.val_rates.compute()
            self.log("val_cer", rates["cer"], prog_bar=True)
            self.log("val_wer", rates["wer"])
            self.log("val_kana_cer", rates["kana_cer"])
            self.log("val_mora_er", rates["mora_er"])
        self.val_rates.reset()
        if not self.trainer.sanity_checking:
            self._val_runs += 1

    def test_step(self, batch: dict, batch_idx: int) -> None:
        scores = self._evaluate(batch, "test", decode=True)
        self.test_rates.update(scores)
        speakers = batch.get("speakers", [""] * len(scores))
        self.test_records.extend(zip(batch["ids"], speakers, scores, strict=True))

    def on_test_epoch_end(self) -> None:
        rates = self.test_rates.compute()
        for name in ("cer", "wer", "kana_cer", "mora_er", "pipeline_kana_cer"):
            self.log(f"test_{name}", rates[name])
        records = self._gather(self.test_records)
        skipped = self._gather([self.skipped["test"]])
        # Every process asks: under DDP, Trainer.log_dir is a broadcast from rank 0.
        out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir).resolve()
        if self.trainer.is_global_zero:
            metrics = {
                **rates_for_json(rates),  # counts summed over processes by compute()
                "wer_meaning": WER_MEANING,
                "long_vowel": self.hparams.long_vowel,
                "skipped_unreadable_audio": sum(skipped),
                **excluded_by_data_check(self.trainer, "test"),
                "base_model": self.hparams.base_model,
                "language": self.hparams.language,
                # The fit's run folder holds the learning curves `report` plots.
                "checkpoint": str(Path(self.trainer.ckpt_path).resolve())
                if self.trainer.ckpt_path
                else None,
            }
            paths = write_test_report(out_dir, records, metrics)
            print(f"predictions: {paths[0]}\nmetrics:     {paths[1]}")
            try:
                print(f"report:      {write_report(out_dir)}")
            # The results are written; a plot that fails (a broken matplotlib, a full disk)
            # must not turn the finished test into an error.
            except Exception as e:  # noqa: BLE001
                warnings.warn(
                    f"report.md was not written ({type(e).__name__}: {e}); the predictions and "
                    f"metrics are. Retry with: python -m whisper_ft report {out_dir}",
                    stacklevel=1,
                )
        self.test_rates.reset()
        self.test_records = []

    def _gather(self, records: list) -> list:
        if self.trainer.world_size == 1:
            return records
        gathered: list[list] = [[] for _ in range(self.trainer.world_size)]
        torch.distributed.all_gather_object(gathered, records)
        return [record for part in gathered for record in part]

    def configure_optimizers(self) -> dict:
        parameters = dict(self.model.named_parameters())
        decay, no_decay = decay_parameter_names(self.model)
        optimizer = adamw(
            [
                {
                    "params": [parameters[n] for n in decay],
                    "weight_decay": self.hparams.weight_decay,
                },
                {"params": [parameters[n] for n in no_decay], "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
            eps=self.hparams.adam_eps,
        )
        warmup, total = self.hparams.lr_warmup_steps, self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_then_linear_decay(step, warmup, int(total))
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def configure_callbacks(self) -> list[pl.Callback]:
        # Every fit logs samples_per_s (and mfu on GPUs with a known peak), CLI or Trainer.fit.
        return [ThroughputLogger(), OutOfMemoryNote()]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lets `export` and `transcribe` rebuild the Whisper model without the base weights.
        checkpoint["whisper_dims"] = vars(self.model.dims).copy()


class OutOfMemoryNote(pl.Callback):
    """Adds the module's `out_of_memory_advice` to an out-of-memory error as a note: shown
    under the traceback (Trainer.fit in a notebook) and by `python -m whisper_ft` as its one
    `error:` line."""

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        advice = getattr(pl_module, "out_of_memory_advice", lambda: "")()
        if is_out_of_memory(exception) and advice:
            if hasattr(exception, "add_note"):
                exception.add_note(advice)
            else:  # Python 3.10: no add_note; out_of_memory_message reads __notes__ all the same
                exception.__notes__ = [*getattr(exception, "__notes__", []), advice]


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA out-of-memory error, or the CPU allocator's."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and CPU_OUT_OF_MEMORY in str(error)
    )


def out_of_memory_message(error: BaseException) -> str:
    """One line: the allocator's first sentence, then the notes OutOfMemoryNote added."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    first = first.split(". ")[0].rstrip(".")
    return " ".join([f"{first}.", *getattr(error, "__notes__", [])])


def out_of_memory_advice(in_flight: dict) -> str:
    """`in_flight`: stage, n (utterances), tokens ((B, L) decoder tokens), audio_lengths ((B,)
    samples, or None), cached (features from the cache instead of audio)."""
    n, (_, n_tokens) = in_flight["n"], in_flight["tokens"]
    if in_flight["cached"]:
        audio = "cached encoder features"
    else:
        audio = f"{n} × 30-s encoder windows"
        lengths = in_flight["audio_lengths"]
        if lengths is not None and len(lengths):
            seconds = lengths.detach().to("cpu", torch.float64) / SAMPLE_RATE
            audio += f" (audio: longest {seconds.max():.1f} s, {seconds.sum():.1f} s in all)"
    return (
        f"It happened in {in_flight['stage']} on a batch of {n} utterances, {n_tokens} decoder "
        f"tokens each, {audio}. Try a smaller --data.batch_size (with "
        "--trainer.accumulate_grad_batches N to keep the effective batch), "
        "--data.max_duration_s to cap the seconds of audio per batch, --data.eval_batch_size "
        "for validation/test, or --tune_batch_size to find the largest batch that fits; "
        "--model.gradient_checkpointing true and bf16-mixed precision also save memory."
    )


def listed(ids: list[str]) -> str:
    """The first MAX_LISTED_IDS ids, comma-separated, and how many more."""
    more = len(ids) - MAX_LISTED_IDS
    return ", ".join(ids[:MAX_LISTED_IDS]) + (f" and {more} more" if more > 0 else "")


def nonfinite_message(run: list[tuple[int, list[str]]], lr: float, precision: str) -> str:
    """The NonFiniteLossError message for `run`, the consecutive (step, utterance ids)."""
    steps = "; ".join(f"step {step}: {listed(ids)}" for step, ids in run)
    fp16 = (
        " or --trainer.precision bf16-mixed (or 32-true) instead of 16-mixed"
        if precision.startswith("16")
        else ""
    )
    return (
        f"training stopped: the loss was nan or inf for {len(run)} steps in a row "
        f"(--model.max_nonfinite_steps); they were skipped, so the weights and the last "
        f"checkpoint are from before them. Utterances: {steps}. Lower --model.lr (now {lr:g}), "
        f"lengthen --model.lr_warmup_steps{fp16}, and check those utterances' audio and text."
    )


def excluded_by_data_check(trainer: pl.Trainer, split: str) -> dict:
    """How many lines of `split`'s manifest the start-up data check excluded, and where its
    report is; {} when the data did not come through `WhisperDataModule`."""
    return getattr(getattr(trainer, "datamodule", None), "exclusions", {}).get(split, {})


def write_test_report(
    out_dir: Path, records: list[tuple[str, str, UtteranceScore]], metrics: dict
) -> tuple[Path, Path]:
    """Write `predictions.tsv` (id, reference, hypothesis, cer: the strings exactly as scored;
    speaker; sorted by id whatever order batches and processes ran in) and `metrics.json`
    into `out_dir`; returns their paths. `records`: (id, speaker, score) per utterance."""
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions, metrics_path = out_dir / "predictions.tsv", out_dir / "metrics.json"
    with predictions.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "reference", "hypothesis", "cer", "speaker"])
        for utterance_id, speaker, s in sorted(records, key=lambda record: record[0]):
            writer.writerow([utterance_id, s.reference, s.hypothesis, f"{s.cer:.6f}", speaker])
    metrics_path.write_text(json.dumps(metrics, ensure_ascii=False, indent=2) + "\n")
    return predictions, metrics_path
