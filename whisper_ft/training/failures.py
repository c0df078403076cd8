"""What a training step does when it fails, as plain objects the LightningModule calls:

    NonFiniteLossGuard    counts nan/inf losses; skip the step, or stop after N in a row
    InFlight              the shapes of the batch a step began, for out-of-memory advice
    is_out_of_memory, out_of_memory_message    recognise the error; one line for the CLI

No Lightning here: `cli.main` imports this module to word errors without paying for
pytorch_lightning's import, and each piece is tested without a Trainer. Messages name the
settings as parameters in backticks (`lr`, `batch_size`: what a notebook passes to
`WhisperFineTuner`, `WhisperDataModule` or `pl.Trainer`); `cli.main` turns them into flags.
"""

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from whisper.audio import SAMPLE_RATE

MAX_LISTED_IDS = 8  # utterance ids named per batch in a failure message
CPU_OUT_OF_MEMORY = "DefaultCPUAllocator: can't allocate memory"  # in torch's RuntimeError


class NonFiniteLossError(RuntimeError):
    """Training stopped after `max_nonfinite_steps` consecutive steps with a nan/inf loss; the
    message names the steps' utterances and what to change."""


@dataclass
class NonFiniteLossGuard:
    """Decides, step by step, whether a loss may update the weights.

    `check` returns True for a finite loss, False (with a warning) to skip a nan/inf one, and
    raises NonFiniteLossError at the `max_steps`-th non-finite loss in a row. Under DDP pass
    `any_process` (a reduction of "stop" over processes) so that all processes stop at the
    same step, or none waits forever for the others.
    """

    max_steps: int
    total: int = 0  # steps skipped for a nan/inf loss, in all
    run: list[tuple[int, list[str]]] = field(default_factory=list)  # consecutive (step, ids)

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_nonfinite_steps must be at least 1, got {self.max_steps}")

    def check(
        self,
        loss: float,
        step: int,
        ids: list[str],
        *,
        lr: float,
        precision: str,
        any_process: Callable[[bool], bool] = bool,
    ) -> bool:
        """`loss` of training step `step` over utterances `ids`; `lr` and `precision` go into
        the stop message's advice."""
        finite = math.isfinite(loss)
        if finite:
            self.run = []
        else:
            self.total += 1
            self.run.append((step, list(ids)))
        stop = any_process(len(self.run) >= self.max_steps)
        if finite and not stop:
            return True
        if stop and not self.run:  # this process's losses were fine
            raise NonFiniteLossError(
                "training stopped: another process's loss was nan or inf for "
                f"{self.max_steps} steps in a row (its error names them)."
            )
        if stop:
            raise NonFiniteLossError(nonfinite_message(self.run, lr, precision))
        warnings.warn(
            f"step {step}: training loss is {loss}; the step is skipped (utterances "
            f"{listed(ids)}).",
            stacklevel=3,
        )
        return False


def listed(ids: list[str]) -> str:
    """The first MAX_LISTED_IDS ids, comma-separated, and how many more."""
    more = len(ids) - MAX_LISTED_IDS
    return ", ".join(ids[:MAX_LISTED_IDS]) + (f" and {more} more" if more > 0 else "")


def nonfinite_message(run: list[tuple[int, list[str]]], lr: float, precision: str) -> str:
    """The NonFiniteLossError message for `run`, the consecutive (step, utterance ids)."""
    steps = "; ".join(f"step {step}: {listed(ids)}" for step, ids in run)
    fp16 = (
        " or `precision` bf16-mixed (or 32-true) instead of 16-mixed"
        if precision.startswith("16")
        else ""
    )
    return (
        f"training stopped: the loss was nan or inf for {len(run)} steps in a row "
        f"(`max_nonfinite_steps`); they were skipped, so the weights and the last "
        f"checkpoint are from before them. Utterances: {steps}. Lower `lr` (now {lr:g}), "
        f"lengthen `lr_warmup_steps`{fp16}, and check those utterances' audio and text."
    )


@dataclass(frozen=True)
class InFlight:
    """The batch a step began, by shape only: holding the batch itself would keep its audio
    in memory past the step.

    tokens : (batch, n_tokens) of the decoder input
    audio_lengths : torch.Tensor, shape = (batch,), samples per row; None for cached features
    """

    stage: str  # training, validation or test
    n: int  # utterances
    tokens: tuple[int, int]
    audio_lengths: torch.Tensor | None
    cached: bool  # encoder features came from the cache instead of audio

    @classmethod
    def of(cls, batch: dict, stage: str) -> "InFlight":
        """From a batch of `collate.collate`."""
        return cls(
            stage=stage,
            n=len(batch["ids"]),
            tokens=tuple(batch["dec_input_ids"].shape),
            audio_lengths=batch.get("audio_lengths"),
            cached="features" in batch,
        )

    def advice(self) -> str:
        """What was in flight when memory ran out, and what to try."""
        n, (_, n_tokens) = self.n, self.tokens
        if self.cached:
            audio = "cached encoder features"
        else:
            audio = f"{n} × 30-s encoder windows"
            if self.audio_lengths is not None and len(self.audio_lengths):
                seconds = self.audio_lengths.detach().to("cpu", torch.float64) / SAMPLE_RATE
                audio += f" (audio: longest {seconds.max():.1f} s, {seconds.sum():.1f} s in all)"
        return (
            f"It happened in {self.stage} on a batch of {n} utterances, {n_tokens} decoder "
            f"tokens each, {audio}. Try a smaller `batch_size` (with "
            "`accumulate_grad_batches` N to keep the effective batch), "
            "`max_duration_s` to cap the seconds of audio per batch, `eval_batch_size` "
            "for validation/test, or `tune_batch_size` to find the largest batch that fits; "
            "`gradient_checkpointing` true and bf16-mixed precision also save memory."
        )


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA out-of-memory error, or the CPU allocator's."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and CPU_OUT_OF_MEMORY in str(error)
    )


def add_note(error: BaseException, note: str) -> None:
    """`error.add_note(note)`, also on Python 3.10 (no add_note; `out_of_memory_message` reads
    `__notes__` all the same)."""
    if hasattr(error, "add_note"):
        error.add_note(note)
    else:
        error.__notes__ = [*getattr(error, "__notes__", []), note]


def out_of_memory_message(error: BaseException) -> str:
    """One line: the allocator's first sentence, then the notes added to the error."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    first = first.split(". ")[0].rstrip(".")
    return " ".join([f"{first}.", *getattr(error, "__notes__", [])])
