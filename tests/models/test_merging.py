"""Weight-space guards: WiSE-FT interpolation and checkpoint averaging, alone and in export."""

import dataclasses

import pytest
import torch
import whisper
from whisper.model import Whisper

from whisper_ft.decoding import DecodingSettings
from whisper_ft.models.export import export_model
from whisper_ft.models.loading import (
    RANDOM_DIMS,
    ModelLoadError,
    decoding_settings,
    save_whisper_checkpoint,
)
from whisper_ft.models.merging import average_checkpoints, interpolate

SETTINGS = DecodingSettings(language="ja", target="kana", kana_decoding=True)


def micro_model(seed: int, dims=RANDOM_DIMS["micro"]) -> Whisper:
    torch.manual_seed(seed)
    model = Whisper(dims)
    for parameter in model.parameters():  # Whisper leaves some weights uninitialised
        torch.nn.init.normal_(parameter, std=0.02)
    return model


def write_ckpt(path, model: Whisper, base_model: str = "random:micro"):
    """A `WhisperFineTuner` checkpoint as fit writes it, in the keys export reads."""
    torch.save(
        {
            "whisper_dims": dataclasses.asdict(model.dims),
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"base_model": base_model},
            "whisper_ft_decoding": SETTINGS.as_dict(),
        },
        path,
    )
    return path


def test_interpolate_gives_the_base_the_fine_tune_and_the_midpoint():
    base, tuned = micro_model(0).state_dict(), micro_model(1).state_dict()
    at_0, at_1, at_half = (interpolate(base, tuned, a) for a in (0.0, 1.0, 0.5))
    assert all(torch.equal(at_0[k], base[k]) for k in base)
    assert all(torch.equal(at_1[k], tuned[k]) for k in tuned)
    key = "decoder.blocks.0.mlp.0.weight"
    assert not torch.equal(base[key], tuned[key])
    torch.testing.assert_close(at_half[key], (base[key] + tuned[key]) / 2, rtol=0, atol=1e-7)
    a = {"w": torch.tensor([0.0, 4.0]), "step": torch.tensor([3])}
    b = {"w": torch.tensor([2.0, 8.0]), "step": torch.tensor([7])}
    mixed = interpolate(a, b, 0.25)
    assert mixed["w"].tolist() == [0.5, 5.0]  # 0.75·a + 0.25·b
    assert mixed["step"].tolist() == [7]  # integer tensors are the fine-tune's


def test_interpolate_keeps_a_frozen_encoder_bit_identical_so_its_feature_cache_stays_valid():
    from whisper_ft.data.feature_cache import encoder_fingerprint

    base = micro_model(0)
    base.encoder.conv1.bias.data[0] = -0.0  # lerp(-0.0, -0.0, a) is +0.0: other bytes
    tuned = micro_model(1)
    tuned.encoder.load_state_dict(base.encoder.state_dict())  # the fine-tune froze it
    merged = micro_model(2)
    merged.load_state_dict(interpolate(base.state_dict(), tuned.state_dict(), 0.25))
    assert encoder_fingerprint(merged) == encoder_fingerprint(base)
    assert torch.signbit(merged.encoder.conv1.bias[0])
    key = "decoder.blocks.0.mlp.0.weight"  # what trained is still mixed
    assert not torch.equal(merged.state_dict()[key], tuned.state_dict()[key])


def test_interpolate_refuses_a_weight_outside_0_1_and_other_sizes():
    state = {"w": torch.zeros(2)}
    for alpha in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"`interpolate` .*: give a weight in \[0, 1\]"):
            interpolate(state, state, alpha)
    with pytest.raises(ModelLoadError, match=r"base and tuned differ in 'w' \(\(3,\) vs \(2,\)\)"):
        interpolate({"w": torch.zeros(3)}, state, 0.5, "base", "tuned")


def test_average_checkpoints_is_the_mean_and_keeps_the_last_settings(tmp_path):
    models = [micro_model(seed) for seed in (0, 1, 2)]
    paths = [write_ckpt(tmp_path / f"step{i}.ckpt", m) for i, m in enumerate(models)]
    averaged = average_checkpoints(paths)
    states = [m.state_dict() for m in models]
    for key in states[0]:
        expected = (states[0][key].double() + states[1][key] + states[2][key]) / 3
        torch.testing.assert_close(averaged.state_dict[key], expected.float(), rtol=0, atol=1e-7)
    assert averaged.dims == RANDOM_DIMS["micro"]
    assert averaged.decoding == SETTINGS


def test_average_refuses_checkpoints_of_different_dims(tmp_path):
    small = write_ckpt(tmp_path / "micro.ckpt", micro_model(0))
    other_dims = dataclasses.replace(RANDOM_DIMS["micro"], n_text_layer=1)
    other = write_ckpt(tmp_path / "other.ckpt", micro_model(1, other_dims))
    with pytest.raises(ModelLoadError, match=r"micro\.ckpt and .*other\.ckpt are models of"):
        average_checkpoints([small, other])


def test_export_interpolates_toward_the_base_and_keeps_the_decoding_settings(tmp_path):
    base, tuned = micro_model(0), micro_model(1)
    base_pt = save_whisper_checkpoint(
        base.dims, base.state_dict(), tmp_path / "base.pt"
    )  # the base, as a user would have it on disk
    ckpt = write_ckpt(tmp_path / "run.ckpt", tuned, base_model=str(base_pt))
    out = export_model(str(ckpt), tmp_path / "wise.pt", interpolate=0.3)
    loaded = whisper.load_model(str(out), device="cpu").state_dict()
    expected = interpolate(base.state_dict(), tuned.state_dict(), 0.3)
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert decoding_settings(str(out)) == SETTINGS
    # averaged with a second checkpoint first, then interpolated (base named explicitly)
    other = micro_model(2)
    second = write_ckpt(tmp_path / "run2.ckpt", other)
    out = export_model(
        str(ckpt),
        tmp_path / "avg.pt",
        average=[str(second)],
        interpolate=0.5,
        interpolate_base=str(base_pt),
    )
    key = "decoder.blocks.1.attn.query.weight"
    mean = (tuned.state_dict()[key].double() + other.state_dict()[key]) / 2
    expected_key = (0.5 * base.state_dict()[key].double() + 0.5 * mean).float()
    loaded = whisper.load_model(str(out), device="cpu").state_dict()
    torch.testing.assert_close(loaded[key], expected_key, rtol=0, atol=1e-7)


def test_export_interpolate_needs_a_base_it_can_load(tmp_path):
    ckpt = write_ckpt(tmp_path / "run.ckpt", micro_model(1))  # fine-tuned from random:micro
    with pytest.raises(ModelLoadError, match="give `interpolate_base`"):
        export_model(str(ckpt), tmp_path / "x.pt", interpolate=0.5)
    with pytest.raises(ValueError, match=r"give a weight in \[0, 1\]"):
        export_model(str(ckpt), tmp_path / "x.pt", interpolate=2.0)
    assert not (tmp_path / "x.pt").exists()
