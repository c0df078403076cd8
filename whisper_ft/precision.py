"""The mixed-precision policy: one choice of compute dtype per device, shared by training
(`default_precision`, the Trainer's default) and the encoder-feature cache's build
(`autocast_dtype`), so that cached features match what training would compute."""

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
