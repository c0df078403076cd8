"""Guards against forgetting in weight space, applied at export: WiSE-FT interpolation toward
the base model and checkpoint averaging.

    interpolate(base_state, tuned_state, alpha)   θ = (1 − α)·θ_base + α·θ_tuned (WiSE-FT,
                                                  Wortsman et al. 2022)
    average_checkpoints(paths)                    the mean weights of several .ckpt of one run
                                                  (icefall / ESPnet style), LoRA merged

Both work on Whisper state dicts (`Whisper.state_dict()` keys); floating tensors are combined
in float32 and cast back to their dtype, any other tensor (integer buffers) is the tuned or the
last checkpoint's own.
"""

from pathlib import Path

import torch

from whisper_ft.models.loading import (
    LightningCheckpoint,
    ModelLoadError,
    read_lightning_checkpoint,
)


def _check_same_layout(first: dict, second: dict, first_name: str, second_name: str) -> None:
    missing = sorted(first.keys() ^ second.keys())
    if missing:
        raise ModelLoadError(
            f"{first_name} and {second_name} hold different weights ({len(missing)} keys in one "
            f"only, e.g. {missing[0]!r}); combine models of the same Whisper size."
        )
    for key, tensor in first.items():
        if tensor.shape != second[key].shape:
            raise ModelLoadError(
                f"{first_name} and {second_name} differ in {key!r} ({tuple(tensor.shape)} vs "
                f"{tuple(second[key].shape)}); combine models of the same Whisper size."
            )


def check_alpha(alpha: float) -> None:
    """ValueError unless `alpha`, the fine-tune's weight in `interpolate`, is in [0, 1]."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(
            f"`interpolate` {alpha}: give a weight in [0, 1] for the fine-tuned model "
            "(0: the base model, 1: the fine-tune as trained; WiSE-FT often uses 0.5)."
        )


def interpolate(
    base_state: dict[str, torch.Tensor],
    tuned_state: dict[str, torch.Tensor],
    alpha: float,
    base_name: str = "the base model",
    tuned_name: str = "the fine-tuned model",
) -> dict[str, torch.Tensor]:
    """WiSE-FT: each floating tensor (1 − `alpha`)·base + `alpha`·tuned; `alpha` 0 is the
    base exactly, 1 the fine-tune exactly; elements both agree on are the fine-tune's bytes
    (a frozen encoder stays bit-identical, so its feature caches stay valid). Other tensors are
    the fine-tune's. Both state dicts must have the same keys and shapes (`*_name` name them
    in the error)."""
    check_alpha(alpha)
    _check_same_layout(base_state, tuned_state, base_name, tuned_name)
    merged = {}
    for key, tuned in tuned_state.items():
        base = base_state[key]
        if not tuned.is_floating_point():
            merged[key] = tuned.clone()
        elif alpha == 0.0:  # exact, not (0 * tuned + base) rounded
            merged[key] = base.to(tuned.dtype).clone()
        elif alpha == 1.0:
            merged[key] = tuned.clone()
        else:
            mixed = torch.lerp(base.float(), tuned.float(), alpha).to(tuned.dtype)
            # Where both agree (a frozen encoder), the fine-tune's bytes: lerp turns -0.0 into
            # 0.0, which would change `encoder_fingerprint` and rebuild every feature cache.
            merged[key] = torch.where(base.to(tuned.dtype) == tuned, tuned, mixed)
    return merged


def average_checkpoints(paths: list[str | Path]) -> LightningCheckpoint:
    """The mean of the model weights of the `paths` (`WhisperFineTuner` .ckpt of one run, LoRA
    adapters merged first as `model_from_checkpoint` does), with the dims, hyperparameters and
    decoding settings of the last. Floating tensors are averaged in float64; other tensors are
    the last checkpoint's. ModelLoadError naming both files when two differ in size."""
    if not paths:
        raise ValueError("`average` is empty: give the .ckpt files to average (two or more).")
    first = read_lightning_checkpoint(paths[0])
    sums = {k: v.double() if v.is_floating_point() else v for k, v in first.state_dict.items()}
    last = first
    for path in paths[1:]:
        last = read_lightning_checkpoint(path)
        if last.dims != first.dims:
            raise ModelLoadError(
                f"{paths[0]} and {path} are models of different dims ({first.dims} vs "
                f"{last.dims}); average checkpoints of one run only."
            )
        _check_same_layout(first.state_dict, last.state_dict, str(paths[0]), str(path))
        for key, tensor in last.state_dict.items():
            sums[key] = sums[key] + tensor.double() if tensor.is_floating_point() else tensor
    state_dict = {
        key: (sums[key] / len(paths)).to(tensor.dtype) if tensor.is_floating_point() else sums[key]
        for key, tensor in last.state_dict.items()
    }
    return last._replace(state_dict=state_dict)
