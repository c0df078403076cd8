"""The LightningModule: teacher-forced decoder loss, AdamW with warm-up, evaluation by decoding."""

import copy
import math
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import whisper
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from whisper.model import Whisper
from whisper.tokenizer import get_tokenizer

from whisper_ft.audio import log_mel_batch
from whisper_ft.data.augment import SpecAugment, spec_augment, valid_frame_counts
from whisper_ft.data.collate import IGNORE_INDEX
from whisper_ft.decoding import (
    NO_SPEECH_RULE,
    DecodingSettings,
    budgets_for,
    decode_guarded,
    decoding_options,
    hit_budget,
    speechless_outputs,
    speechless_said_rate,
)
from whisper_ft.evaluation.metrics import CorpusErrorRates, UtteranceScore, score
from whisper_ft.evaluation.retention import (
    Retention,
    cached_scores,
    encode_clips,
    retention_scores,
)
from whisper_ft.models.loading import ModelLoadError, load_base_model
from whisper_ft.models.trainable import (
    TrainParts,
    add_lora,
    checkpoint_blocks,
    encoder_top,
    freeze,
    select_trainable,
    train_encoder_top,
)
from whisper_ft.text import LongVowel
from whisper_ft.training.failures import InFlight, NonFiniteLossGuard, add_note, is_out_of_memory
from whisper_ft.training.results import TestResults, TestScores
from whisper_ft.training.throughput import ThroughputLogger


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over label tokens, skipping padding (-100).

    logits : torch.Tensor, shape = (batch, n_tokens, n_vocab)
    labels : torch.Tensor, shape = (batch, n_tokens)
    """
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


def kl_to_teacher(
    logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Mean KL(teacher ‖ student) over the label positions (padding, -100, left out): how far
    the fine-tuned decoder's next-token distribution has moved from the base decoder's on the
    same inputs (distil-whisper's term, at temperature 1).

    logits, teacher_logits : torch.Tensor, shape = (batch, n_tokens, n_vocab)
    labels : torch.Tensor, shape = (batch, n_tokens)
    """
    keep = labels != IGNORE_INDEX
    if not keep.any():
        return logits.sum() * 0.0  # no label position: nothing to keep close (and a graph)
    student = F.log_softmax(logits[keep].float(), dim=-1)
    teacher = F.log_softmax(teacher_logits[keep].float(), dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean")


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
        kl_weight: Adds kl_weight × KL(base decoder ‖ fine-tuned decoder) on each training
            batch to the loss (logged as train_kl): a guard against forgetting what the base
            model knew. The base decoder is the one fit starts from (a resumed fit rebuilds it
            from `base_model`); it runs without gradients on the same encoder output. 0: off.
        encoder_top_layers: With freeze_encoder, the last k blocks of the encoder and its
            `ln_post` train too (acoustic adaptation to new voices), 0 to n_audio_layer - 1;
            0: none (the encoder frozen as a whole). The encoder-feature cache then stores the
            input of the first trained block instead of the encoder's output, and every step
            runs those k blocks over it: their forward and backward over 1500 frames per
            utterance on top of the decoder's step (for tiny, k=1 is about a quarter of its
            encoder). Live audio runs the whole encoder, gradients from those blocks up.
        retention_language: At test end, also decode the retention set (`retention_set`:
            sentences in this language, spoken by espeak-ng; `python -m whisper_ft test` and
            the demo make it) as plain text with this model and with `base_model`, and log
            their WER (test_retention_wer, test_retention_base_wer, test_retention_ratio):
            what the fine-tune kept of what the base model could do. The base's figure is kept
            beside the set (`base_retention_file`), so it is decoded once. None or "": off.
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
        kl_weight: float = 0.0,
        encoder_top_layers: int = 0,
        retention_language: str | None = "en",
    ) -> None:
        super().__init__()
        if not (math.isfinite(kl_weight) and kl_weight >= 0):
            raise ValueError(f"`kl_weight` must be a finite number >= 0, got {kl_weight}")
        if encoder_top_layers and not freeze_encoder:
            raise ValueError(
                f"encoder_top_layers={encoder_top_layers} trains the encoder's top blocks of a "
                "frozen encoder, but freeze_encoder false trains all of it: set one of them."
            )
        self.nonfinite = NonFiniteLossGuard(max_nonfinite_steps)  # checks the value first
        self.trained_target: str | None = None  # the batches' target (kana, text), once seen
        if isinstance(spec_augment, dict):  # as stored in a checkpoint's hyperparameters
            spec_augment = SpecAugment(**spec_augment)
        self.spec_augment = spec_augment or SpecAugment()
        self.save_hyperparameters(ignore=["spec_augment"])
        # A plain dict: checkpoints stay loadable with torch.load(weights_only=True).
        self.hparams["spec_augment"] = asdict(self.spec_augment)
        self.model: Whisper = load_base_model(base_model)
        self._loaded_from = base_model  # a .ckpt when fit/test resume from one (cli/entry.py)
        self.tokenizer = get_tokenizer(
            self.model.is_multilingual,
            num_languages=self.model.num_languages,
            language=language,
            task=task,
        )
        # The first encoder block that trains (n_audio_layer: none, or all with freeze_encoder
        # false): cached features from below it run through the blocks from it on.
        self.encoder_first_trained = self.model.dims.n_audio_layer
        if freeze_encoder:
            freeze(self.model.encoder)
            self.encoder_first_trained = train_encoder_top(self.model.encoder, encoder_top_layers)
        select_trainable(self.model.decoder, train_parts, last_layers)
        if lora_rank:
            add_lora(self.model.decoder, lora_rank, lora_alpha)
        if gradient_checkpointing:
            checkpoint_blocks(self.model)  # a frozen encoder runs without gradients: unaffected
        # Kept outside nn.Module's registry: as a submodule it would add a second copy of every
        # decoder weight (`_orig_mod.…`) to the state dict and to checkpoints.
        compiled = torch.compile(self.model.decoder) if compile_decoder else self.model.decoder
        object.__setattr__(self, "train_decoder", compiled)
        # The base decoder for kl_weight, made at fit start; outside the registry for the same
        # reason: checkpoints keep only the fine-tuned weights.
        object.__setattr__(self, "teacher", None)
        self.val_rates = CorpusErrorRates()
        self.test_rates = CorpusErrorRates()
        self.test_records: list[tuple[str, str, UtteranceScore]] = []  # (id, speaker, score)
        self.test_scores: TestScores | None = None  # the last test's, for TestResults
        # The manifest `retention_language` scores at test end (corpora.espeak.retention_set,
        # which `test` and the demo call: this room does not build corpora); None: not measured.
        self.retention_set: Path | None = None
        self._val_runs = 0
        self.val_decoded = False  # whether the last validation decoded (BestCheckpoint reads it)
        self.skipped: dict[str, int] = {"train": 0, "val": 0, "test": 0}  # unreadable audio
        self.in_flight: InFlight | None = None  # the last batch a step began: for OOM advice
        self._eval_mode_filter: warnings.catch_warnings | None = None  # fit start to train start

    def train(self, mode: bool = True) -> "WhisperFineTuner":
        # Lightning switches the whole module to train mode each epoch; a frozen encoder stays
        # in eval mode so it computes exactly what it computed before fine-tuning.
        super().train(mode)
        if self.hparams.freeze_encoder:
            self.model.encoder.eval()
            for block in self.model.encoder.blocks[self.encoder_first_trained :]:
                block.train(mode)
            if self.hparams.encoder_top_layers:
                self.model.encoder.ln_post.train(mode)
        return self

    def on_fit_start(self) -> None:
        if self.hparams.kl_weight > 0 and self.teacher is None:
            object.__setattr__(self, "teacher", self._base_decoder().to(self.device))
        if self.hparams.freeze_encoder:
            # Lightning checks for modules in eval mode between this hook and on_train_start and
            # would warn at every fit about the encoder that train() keeps in eval mode on
            # purpose. The filter matches that one warning of that one Lightning module and
            # lives only until on_train_start: the process's filters are left as they were.
            self._eval_mode_filter = warnings.catch_warnings()
            self._eval_mode_filter.__enter__()
            warnings.filterwarnings(
                "ignore",
                message=r"Found \d+ module\(s\) in eval mode",
                category=PossibleUserWarning,
                module=r"pytorch_lightning\.loops\.fit_loop",
            )

    def _base_decoder(self) -> torch.nn.Module:
        """A frozen copy of the decoder fine-tuning started from: this one before any step, or,
        when this module was built from a checkpoint to resume, `base_model`'s again."""
        if self._loaded_from == self.hparams.base_model:  # a fit that starts from the base
            decoder = copy.deepcopy(self.model.decoder)
        elif str(self.hparams.base_model).startswith("random:"):
            raise ValueError(
                "`kl_weight` keeps the decoder close to the base model's, but this fit resumes "
                f"from a checkpoint of a random base ({self.hparams.base_model}), which cannot be "
                "made again; resume with --model.kl_weight 0, or fine-tune a named base model."
            )
        else:
            decoder = load_base_model(self.hparams.base_model).decoder
        for parameter in decoder.parameters():
            parameter.requires_grad_(False)
        return decoder.eval()

    def on_train_start(self) -> None:
        if self._eval_mode_filter is not None:
            self._eval_mode_filter.__exit__(None, None, None)
            self._eval_mode_filter = None

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
        # Gradients flow from the first block that trains up (autograd keeps nothing below it).
        trains = not self.hparams.freeze_encoder or self.hparams.encoder_top_layers > 0
        with torch.set_grad_enabled(torch.is_grad_enabled() and trains):
            return self.model.encoder(mel)

    def forward(self, audio: torch.Tensor, dec_input_ids: torch.Tensor) -> torch.Tensor:
        """audio (batch, n_samples), dec_input_ids (batch, n_tokens) → logits (batch, n_tokens,
        n_vocab)."""
        return self.model.decoder(dec_input_ids, self.encode(audio))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        self.in_flight = InFlight.of(batch, "training")
        self.trained_target = batch.get("target", self.trained_target)
        if not self._count_skipped(batch, "train"):  # every file of the batch became unreadable
            self._loss_is_finite(torch.zeros(()), [])  # still takes part in the stop decision
            return self._skipped_step()
        features = self.features(batch, augment=True)
        logits = self.train_decoder(batch["dec_input_ids"], features)
        loss = token_loss(logits, batch["labels"])
        n = len(batch["ids"])
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(batch["dec_input_ids"], features)
            kl = kl_to_teacher(logits, teacher_logits, batch["labels"])
            self.log("train_kl", kl, batch_size=n)
            loss = loss + self.hparams.kl_weight * kl
        if not self._loss_is_finite(loss, batch["ids"]):
            return self._skipped_step()
        self.log("train_loss", loss, prog_bar=True, batch_size=n)
        return loss

    @property
    def nonfinite_steps(self) -> int:
        """Training steps skipped for a nan/inf loss, in all."""
        return self.nonfinite.total

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
        """The guard's decision for this step (see `NonFiniteLossGuard`). Costs one
        host-device sync per step on a GPU (the decision to skip needs the value); the
        progress bar's train_loss syncs as often."""
        any_process = bool
        if self._distributed():  # all processes stop together, or none waits forever
            strategy = self.trainer.strategy
            any_process = lambda stop: strategy.reduce_boolean_decision(stop, all=False)  # noqa: E731
        precision = str(self._trainer.precision) if self._trainer is not None else "32-true"
        finite = self.nonfinite.check(
            loss.item(), self.global_step, ids, lr=self.hparams.lr, precision=precision,
            any_process=any_process,
        )  # fmt: skip
        if not finite:  # skipped (a stop raised above): one more in the count
            self.log("train_nonfinite_steps", float(self.nonfinite.total), reduce_fx="max")
        return finite

    def out_of_memory_advice(self) -> str:
        """What was in flight when memory ran out, and what to try; '' before any step."""
        return self.in_flight.advice() if self.in_flight else ""

    def features(self, batch: dict, augment: bool = False) -> torch.Tensor:
        """The batch's encoder output: read from the encoder-feature cache when the batch
        carries `features` (stored float16; with `features_block` i, the input of encoder
        block i, run through the blocks from i on and `ln_post`: `encoder_top_layers`), else
        encoded from its `audio`.

        returns : torch.Tensor, shape = (batch, n_audio_ctx, n_audio_state), float32
        """
        if "features" not in batch:
            return self.encode(batch["audio"], batch.get("audio_lengths"), augment=augment)
        features = batch["features"].float()  # autocast picks the blocks' compute dtype
        block = batch.get("features_block")  # None: the encoder's output
        if block is None and self.hparams.encoder_top_layers:
            raise ValueError(
                f"encoder_top_layers={self.hparams.encoder_top_layers} trains the encoder's top "
                "blocks, but the batch holds cached encoder output, which they cannot change: "
                "give the data module this module's ModelSide (connect, or the Trainer's), so "
                f"that it caches the input of block {self.encoder_first_trained}."
            )
        if block is None:
            return features
        return encoder_top(self.model.encoder, features, block)

    def _count_skipped(self, batch: dict, stage: str) -> int:
        """Counts the batch's unreadable items (the dataset warned with their files); returns
        how many utterances are left to use."""
        self.skipped[stage] += len(batch.get("skipped", ()))
        if self.skipped[stage]:
            self.log(f"{stage}_skipped_audio", float(self.skipped[stage]), reduce_fx="max")
        return len(batch["ids"])

    def _evaluate(self, batch: dict, stage: str, decode: bool) -> list[UtteranceScore]:
        self.in_flight = InFlight.of(batch, {"val": "validation", "test": "test"}[stage])
        if not self._count_skipped(batch, stage):
            return []
        features = self.features(batch)
        loss = token_loss(self.model.decoder(batch["dec_input_ids"], features), batch["labels"])
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=len(batch["ids"]), sync_dist=True)
        if not decode:
            return []
        # From the audio alone, as transcribe and serve decode: never from the references.
        budgets = budgets_for(batch["durations_s"], self.model.dims.n_text_ctx)
        target, long_vowel = batch.get("target", "kana"), self.hparams.long_vowel
        options = self._decoding_options(target, features.device)
        # Whisper's no-speech rule, as transcribe applies it: "" where the model hears none.
        results = decode_guarded(self.model, features, options, budgets, NO_SPEECH_RULE)
        language = self.hparams.language
        return [
            score(
                ref, result.text, target=target, long_vowel=long_vowel, language=language,
                hit_budget=hit_budget(result, budget),
            )
            for ref, result, budget in zip(batch["texts"], results, budgets, strict=True)
        ]  # fmt: skip

    def _decoding_options(self, target: str, device: torch.device) -> whisper.DecodingOptions:
        settings = replace(self.decoding_settings, target=target)
        return decoding_options(
            settings.language,
            settings.task,
            device,
            suppress_tokens=settings.suppress_tokens(self.tokenizer),
        )

    def _decoding_this_validation(self) -> bool:
        every = self.hparams.decode_every_n_val
        return every > 0 and not self.trainer.sanity_checking and self._val_runs % every == 0

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_rates.update(self._evaluate(batch, "val", self._decoding_this_validation()))

    def on_validation_epoch_end(self) -> None:
        # BestCheckpoint saves only when this is True: Lightning keeps an earlier run's val_cer
        # in `trainer.callback_metrics`, so its presence does not say this validation decoded.
        self.val_decoded = self._decoding_this_validation()
        if self.val_decoded:
            rates = self.val_rates.compute()
            self.log("val_cer", rates["cer"], prog_bar=True)
            if not rates["wer"].isnan():  # NaN for kana targets: katakana has no word split
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
        rates = self.test_rates.compute()  # counts summed over processes
        for name in ("cer", "wer", "kana_cer", "mora_er", "pipeline_kana_cer"):
            if name != "wer" or not rates[name].isnan():  # no WER for kana targets (metrics.py)
                self.log(f"test_{name}", rates[name])
        for name in ("budget_hit_rate", "repetition_rate", "insertion_rate"):  # looping signs
            self.log(f"test_{name}", rates[name])
        skipped = sum(self._gather([self.skipped["test"]]))
        # What the model says where nobody speaks: each process decodes the same clips.
        target = self.test_records[0][2].target if self.test_records else "kana"
        said = speechless_outputs(self.model, self._decoding_options(target, self.device))
        self.log("test_speechless_said_rate", speechless_said_rate(said))
        retention = self._retention()
        if retention is not None:
            self.log("test_retention_wer", retention.after.wer)
            self.log("test_retention_base_wer", retention.before.wer)
            self.log("test_retention_ratio", retention.ratio)
        records = self._gather(self.test_records)
        self.test_scores = TestScores(records, rates, skipped, said, retention)
        self.test_rates.reset()
        self.test_records = []

    def _retention(self) -> Retention | None:
        """This model's and `base_model`'s scores on `retention_set` (see `retention_language`),
        decoded on the first process and sent to the others; None when either is unset."""
        language, manifest = self.hparams.get("retention_language"), self.retention_set
        if not language or manifest is None:
            return None
        result = None
        if self.trainer.is_global_zero:
            base = self.hparams.base_model
            # A frozen encoder is the base's own (a WiSE-FT merge keeps it bit-identical): one
            # encoder pass over the clips serves the base's decoding and this model's.
            shared = (
                encode_clips(self.model, manifest)
                if self.encoder_first_trained == self.model.dims.n_audio_layer
                and self.hparams.freeze_encoder
                else None
            )
            try:
                before = cached_scores(
                    base_retention_file(manifest, base),
                    lambda: load_base_model(base).to(self.device),
                    manifest,
                    language,
                    audio_features=shared,
                )
            except ModelLoadError as e:  # offline, say: the test's own figures still count
                warnings.warn(f"retention not measured: {e}", stacklevel=1)
            else:
                after = retention_scores(self.model, manifest, language, audio_features=shared)
                result = Retention(before, after)
        return self.trainer.strategy.broadcast(result, src=0)

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
        return [ThroughputLogger(), OutOfMemoryNote(), TestResults()]

    @property
    def decoding_settings(self) -> DecodingSettings:
        """How this model decodes: its language, task, kana constraint and the target it was
        trained on (None before a training batch); saved in every checkpoint for `export`,
        `transcribe` and `serve`."""
        return DecodingSettings(
            language=self.hparams.language,
            task=self.hparams.task,
            target=self.trained_target,
            kana_decoding=self.hparams.kana_decoding,
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lets `export` and `transcribe` rebuild the Whisper model without the base weights.
        checkpoint["whisper_dims"] = vars(self.model.dims).copy()
        checkpoint["whisper_ft_decoding"] = self.decoding_settings.as_dict()
        # A resumed fit decodes on the same validations (`decode_every_n_val`) as one that ran
        # through.
        checkpoint["whisper_ft_val_runs"] = self._val_runs

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._val_runs = checkpoint.get("whisper_ft_val_runs", 0)
        self.trained_target = checkpoint.get("whisper_ft_decoding", {}).get("target")


def base_retention_file(manifest: str | Path, base_model: str) -> Path:
    """Where `base_model`'s retention scores on `manifest` are kept: beside it, by name."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(base_model))
    return Path(manifest).parent / f"base_{name}.json"


class OutOfMemoryNote(pl.Callback):
    """Adds the module's `out_of_memory_advice` to an out-of-memory error as a note: shown
    under the traceback (Trainer.fit in a notebook) and by `python -m whisper_ft` as its one
    `error:` line."""

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        advice = getattr(pl_module, "out_of_memory_advice", lambda: "")()
        if is_out_of_memory(exception) and advice:
            add_note(exception, advice)
