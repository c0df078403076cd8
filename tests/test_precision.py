"""One compute dtype per device, for the Trainer and the feature cache's build alike."""

import pytest
import torch

from whisper_ft.precision import (
    autocast_dtype,
    compute_dtype_name,
    default_precision,
    precision_compute_dtype,
)


@pytest.mark.parametrize(
    ("cuda", "capability", "dtype", "precision"),
    [
        (False, None, None, "32-true"),
        (True, (8, 0), torch.bfloat16, "bf16-mixed"),  # A100
        (True, (9, 0), torch.bfloat16, "bf16-mixed"),  # H100/H200
        (True, (7, 5), torch.float16, "16-mixed"),  # Colab's T4: bf16 only emulated
        (True, (7, 0), torch.float16, "16-mixed"),  # V100
    ],
)
def test_the_trainer_and_the_cache_build_choose_the_same_dtype(
    monkeypatch, cuda, capability, dtype, precision
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args: capability)
    # torch answers True on a T4 too (emulation counts by default): it must not decide.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    device = torch.device("cuda" if cuda else "cpu")
    assert autocast_dtype(device) is dtype
    assert default_precision() == precision
    assert autocast_dtype(torch.device("cpu")) is None  # the CPU never autocasts


@pytest.mark.parametrize(
    ("precision", "device", "dtype"),
    [
        ("32-true", "cpu", torch.float32),
        ("32", "cuda", torch.float32),
        ("bf16-mixed", "cuda", torch.bfloat16),
        ("bf16-true", "cpu", torch.bfloat16),
        ("16-mixed", "cuda", torch.float16),
        ("16", "cuda", torch.float16),
        ("16-true", "cuda", torch.float16),
        ("16-mixed", "cpu", torch.bfloat16),  # Lightning runs bf16-mixed there
    ],
)
def test_each_trainer_precision_computes_the_encoder_in_its_dtype(precision, device, dtype):
    assert precision_compute_dtype(precision, torch.device(device)) is dtype


def test_a_precision_without_a_cache_dtype_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="'64-true'.*--trainer.precision 32-true"):
        precision_compute_dtype("64-true", torch.device("cpu"))
    assert compute_dtype_name("bf16-mixed", torch.device("cuda")) == "bfloat16"
    assert compute_dtype_name(None, torch.device("cpu")) == "float32"  # CPU default: 32-true
