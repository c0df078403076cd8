"""Export a model where users run Whisper: openai-whisper `.pt`, CTranslate2 (faster-whisper)
or a Hugging Face folder (transformers), from any source `load_base_model` reads.

LoRA adapters in a `.ckpt` are merged into the weights first, so every format holds a plain
Whisper. Two guards against forgetting can be applied on the way (`models.merging`): the mean
of several checkpoints of the run (`average`) and WiSE-FT interpolation toward the base model
(`interpolate`). The CTranslate2 folder is made by CTranslate2's own converter from the Hugging Face
export (`ctranslate2.converters.TransformersConverter`), never by writing its bytes here.
"""

import os
import shutil
from pathlib import Path
from typing import Literal, get_args

from whisper.model import Whisper

from whisper_ft.decoding import SETTINGS_FILE, DecodingSettings
from whisper_ft.models.loading import (
    ModelLoadError,
    decoding_settings,
    dense_alignment_heads,
    load_base_model,
    model_from_checkpoint,
    read_lightning_checkpoint,
    save_whisper_checkpoint,
)
from whisper_ft.models.merging import average_checkpoints, check_alpha
from whisper_ft.models.merging import interpolate as interpolate_states

Format = Literal["openai", "ct2", "hf"]  # what `--format` accepts; openai is the default
FORMATS: tuple[str, ...] = get_args(Format)
# CTranslate2 weight types (`--quantization`); float16 is faster-whisper's usual download, int8
# the smallest and fastest on CPUs (approximate: its tokens may differ from openai-whisper's).
Quantization = Literal["float16", "float32", "int8", "int8_float16"]
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)
# Files faster-whisper reads beside model.bin so that it never reaches for the Hub.
CT2_COPIED_FILES = ("tokenizer.json", "preprocessor_config.json")


def load_for_export(source: str) -> tuple[Whisper, DecodingSettings | None]:
    """The model to export, on the CPU in float32: a `.ckpt` (LoRA merged), `.pt`, CTranslate2
    or Hugging Face folder, a name or `random:<size>` (anything `load_base_model` reads); and
    the decoding settings stored with it (None for a base model)."""
    if Path(source).suffix != ".ckpt":
        model = load_base_model(source, device="cpu").float().eval()
        return model, decoding_settings(source)
    model, settings = model_from_checkpoint(source)
    return dense_alignment_heads(model).eval(), settings


def save_openai(
    model: Whisper, out_path: str | Path, settings: DecodingSettings | None = None
) -> Path:
    """`model` as `whisper.load_model(out_path)` reads it, with the fine-tune's `settings`
    (`loading.save_whisper_checkpoint`)."""
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_whisper_checkpoint(model.dims, state_dict, out_path, settings)


def require_extras(*modules: str) -> None:
    """Raise `ModelLoadError` naming the missing packages of an export format, with the command
    that installs them."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelLoadError(
            f"this export needs {', '.join(missing)}: pip install -r requirements-optional.txt"
        )


def save_ct2(
    model: Whisper,
    out_dir: str | Path,
    quantization: str = "float16",
    settings: DecodingSettings | None = None,
) -> Path:
    """A CTranslate2 Whisper folder (`model.bin`, `config.json`, `vocabulary.json`,
    `tokenizer.json`, `preprocessor_config.json`, and with a fine-tune's `settings`
    `SETTINGS_FILE`) that `faster_whisper.WhisperModel(out_dir)` loads offline. Weights are
    stored as `quantization` (see `QUANTIZATIONS`)."""
    import tempfile

    from ctranslate2.converters import TransformersConverter

    from whisper_ft.models.hf import save_hf

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization {quantization!r}: choose one of {', '.join(QUANTIZATIONS)}")
    require_extras("ctranslate2", "transformers")
    with tempfile.TemporaryDirectory(prefix="whisper-ft-hf-") as hf_dir:
        save_hf(model, hf_dir, settings)
        copied = [*CT2_COPIED_FILES, *([SETTINGS_FILE] if settings is not None else [])]
        converter = TransformersConverter(hf_dir, copy_files=copied)
        converter.convert(str(out_dir), quantization=quantization, force=True)
    return Path(out_dir)


def _replace_folder(out_dir: Path, write) -> Path:
    # Written beside the target, then swapped in: a failed export never leaves half a folder,
    # and only an earlier export (or an empty folder) is ever replaced.
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not (out_dir / "config.json").is_file():
            raise ModelLoadError(
                f"{out_dir}: exists and is not an earlier export (no config.json); choose "
                "another output folder."
            )
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def merged_for_export(
    source: str,
    average: list[str] | None = None,
    interpolate: float | None = None,
    interpolate_base: str | None = None,
) -> tuple[Whisper, DecodingSettings | None]:
    """`load_for_export(source)`, with `source`'s weights averaged with those of the `average`
    checkpoints, then interpolated toward the base model by `interpolate` (see `export_model`).
    The decoding settings are `source`'s."""
    if interpolate is not None:
        check_alpha(interpolate)  # before any model is loaded
    is_ckpt = Path(source).suffix == ".ckpt"
    if average and not is_ckpt:
        raise ModelLoadError(
            f"`average` needs `source` to be a .ckpt of the run (got {source}); give the "
            "checkpoint to export and the others to average with it."
        )
    model, settings = load_for_export(source)
    if average:
        averaged = average_checkpoints([source, *average])
        model = dense_alignment_heads(Whisper(averaged.dims))
        model.load_state_dict(averaged.state_dict)
        model.eval()
    if interpolate is None:
        return model, settings
    base_spec = interpolate_base
    if base_spec is None:
        if not is_ckpt:
            raise ModelLoadError(
                f"`interpolate` needs the base model: {source} is not a .ckpt that names it; "
                "give `interpolate_base` (a Whisper name, .pt or model folder)."
            )
        base_spec = read_lightning_checkpoint(source).hyper_parameters.get("base_model")
        if not base_spec or str(base_spec).startswith("random:"):
            raise ModelLoadError(
                f"{source} was fine-tuned from {base_spec or 'an unrecorded base model'}, whose "
                "weights cannot be had again; give `interpolate_base` (the base's .pt or folder)."
            )
    base = load_base_model(str(base_spec), device="cpu").float()
    merged = interpolate_states(
        base.state_dict(), model.state_dict(), interpolate, str(base_spec), source
    )
    model.load_state_dict(merged)
    return model, settings


def export_model(
    source: str,
    out: str | Path,
    format: Format = "openai",
    quantization: Quantization = "float16",
    average: list[str] | None = None,
    interpolate: float | None = None,
    interpolate_base: str | None = None,
) -> Path:
    """Export `source` (see `load_for_export`) as `format` (`FORMATS`) to `out`: a `.pt` file
    for openai, a folder for ct2 and hf. `quantization` applies to ct2 only.

    `average`: other `.ckpt` of the same run whose weights are averaged with `source`'s
    (`merging.average_checkpoints`). `interpolate`: α of WiSE-FT, the weights become
    (1 − α)·base + α·fine-tuned (`merging.interpolate`; 0 the base, 1 the fine-tune), the base
    being `interpolate_base` or else the checkpoint's `base_model` hyperparameter. The export
    keeps `source`'s decoding settings either way.
    """
    if format not in FORMATS:
        raise ValueError(f"`format` {format!r}: choose one of {', '.join(FORMATS)}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` {quantization!r}: choose one of {', '.join(QUANTIZATIONS)}"
        )
    require_extras(
        *{"openai": (), "hf": ("transformers",), "ct2": ("ctranslate2", "transformers")}[format]
    )
    model, settings = merged_for_export(source, average, interpolate, interpolate_base)
    out = Path(out)
    if format == "openai":
        return save_openai(model, out, settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    if format == "hf":
        from whisper_ft.models.hf import save_hf

        return _replace_folder(out, lambda tmp: save_hf(model, tmp, settings))
    return _replace_folder(out, lambda tmp: save_ct2(model, tmp, quantization, settings))
