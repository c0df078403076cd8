"""One compute dtype per device, for the Trainer and the feature cache's build alike."""

import pytest
import torch

from whisper_ft.precision import autocast_dtype, default_precision


@pytest.mark.parametrize(
    ("cuda", "bf16", "dtype", "precision"),
    [
        (False, False, None, "32-true"),
        (True, True, torch.bfloat16, "bf16-mixed"),
        (True, False, torch.float16, "16-mixed"),  # Colab's T4
    ],
)
def test_the_trainer_and_the_cache_build_choose_the_same_dtype(
    monkeypatch, cuda, bf16, dtype, precision
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    device = torch.device("cuda" if cuda else "cpu")
    assert autocast_dtype(device) is dtype
    assert default_precision() == precision
    assert autocast_dtype(torch.device("cpu")) is None  # the CPU never autocasts
