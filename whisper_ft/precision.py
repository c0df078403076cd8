"""The mixed-precision policy: the Trainer's default precision per device
(`default_precision`, from `autocast_dtype`), and the dtype a Trainer precision computes the
encoder in (`precision_compute_dtype`), which the encoder-feature cache is built in and keyed
by, so that cached features are what that fit would compute."""

import torch

BF16_MIN_CAPABILITY = (8, 0)  # Ampere: the first GPUs with bf16 tensor cores and convolutions


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The encoder's compute dtype on `device`: bfloat16 on CUDA GPUs that compute it natively
    (compute capability 8.0 and up), float16 on older ones such as Colab's T4 (7.5), None
    (float32) else. Not `torch.cuda.is_bf16_supported()`, which by default also answers True
    where bf16 is only emulated, far slower than fp16."""
    if device.type != "cuda":
        return None
    native = torch.cuda.get_device_capability(device) >= BF16_MIN_CAPABILITY
    return torch.bfloat16 if native else torch.float16


def default_precision() -> str:
    """The Trainer's precision: bf16 mixed on GPUs that support it, fp16 mixed on older ones
    (Colab's T4), fp32 on the CPU (`autocast_dtype` of this machine's device).
    `--trainer.precision` overrides it."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return {None: "32-true", torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed"}[
        autocast_dtype(device)
    ]


COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def precision_compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype a Trainer with `precision` ("32-true", "bf16-mixed", "16-mixed", …, as
    `trainer.precision` names it) computes the encoder in on `device`: float32 for 32-true/32,
    bfloat16 for bf16-*, float16 for 16-*, except 16-mixed on the CPU, where Lightning (2.6)
    runs bf16-mixed (CPU autocast has no fp16 AMP)."""
    precision = str(precision)
    if precision in ("32-true", "32"):
        return torch.float32
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        mixed = precision in ("16-mixed", "16")
        return torch.bfloat16 if mixed and device.type == "cpu" else torch.float16
    raise ValueError(
        f"precision {precision!r}: the encoder-feature cache is built in float32, bfloat16 or "
        "float16; train with --trainer.precision 32-true, bf16-mixed or 16-mixed, or "
        "--data.feature_cache off."
    )


def compute_dtype_name(precision: str | None, device: torch.device) -> str:
    """`precision_compute_dtype`'s dtype as a key of COMPUTE_DTYPES ("bfloat16");
    `precision` None: `default_precision()`."""
    dtype = precision_compute_dtype(precision or default_precision(), device)
    return next(name for name, value in COMPUTE_DTYPES.items() if value is dtype)
