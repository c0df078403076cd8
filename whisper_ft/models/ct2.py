"""CTranslate2 Whisper models (faster-whisper's format) read into openai-whisper's `Whisper`.

A CTranslate2 model folder holds `model.bin` (CTranslate2's `WhisperSpec`: a header, then named
arrays, then aliases) and `config.json` (alignment heads, language ids, suppressed tokens).
faster-whisper has no way back to a trainable model; this module is that way back, without
the `ctranslate2` package: the file is read with the standard library and numpy.

The names map one to one onto openai-whisper's state dict, except that CTranslate2 fuses the
self-attention's query, key and value (`linear_0` = [q; k; v], bias [b_q; 0; b_v]: Whisper's
key has no bias) and the cross-attention's key and value (`linear_1` = [k; v], bias [0; b_v]).
No scaling is folded into the weights, so float16 and float32 files convert exactly; int8 and
int16 files store one scale per output row (`weight_scale`) and dequantise approximately.
"""

import json
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from whisper.model import ModelDimensions, Whisper

# CTranslate2's dtype ids in model.bin (ctranslate2/types.h).
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BFLOAT16 = 5  # numpy has no bfloat16: read as uint16 and widened by torch
_MIN_BINARY_VERSION = 5  # the first with aliases and dtype ids (CTranslate2 ≥ 2.0)


class CT2FormatError(ValueError):
    """A model.bin that is not a CTranslate2 Whisper model this reader understands."""


def is_ct2_model_dir(path: str | Path) -> bool:
    """True for a folder that holds a CTranslate2 model (`model.bin` and `config.json`)."""
    path = Path(path)
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def read_model_bin(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """The spec name and the named arrays of a CTranslate2 `model.bin`; aliases resolved.

    Arrays are views into the file's bytes (no copy); int8/int16 weights come with their
    `…/weight_scale` arrays, as stored.
    """
    path = Path(path)
    buffer = memoryview(path.read_bytes())
    position = 0

    def take(fmt: str) -> tuple:
        nonlocal position
        values = struct.unpack_from(fmt, buffer, position)
        position += struct.calcsize(fmt)
        return values

    def string() -> str:
        nonlocal position
        (length,) = take("<H")
        text = bytes(buffer[position : position + length]).rstrip(b"\0").decode("utf-8")
        position += length
        return text

    try:
        (version,) = take("<I")
        if version < _MIN_BINARY_VERSION:
            raise CT2FormatError(
                f"{path}: CTranslate2 binary version {version} is too old (need "
                f"{_MIN_BINARY_VERSION} or newer); convert the model again with a current "
                "ct2-transformers-converter."
            )
        spec = string()
        _revision, count = take("<II")
        arrays: dict[str, np.ndarray] = {}
        for _ in range(count):
            name = string()
            (rank,) = take("<B")
            shape = take(f"<{rank}I")
            dtype_id, n_bytes = take("<BI")
            data = buffer[position : position + n_bytes]
            position += n_bytes
            if dtype_id == _BFLOAT16:
                arrays[name] = _BFloat16Array(np.frombuffer(data, np.uint16).reshape(shape))
            elif dtype_id in _DTYPES:
                arrays[name] = np.frombuffer(data, _DTYPES[dtype_id]).reshape(shape)
            else:
                raise CT2FormatError(f"{path}: array {name!r} has unknown dtype id {dtype_id}.")
        (n_aliases,) = take("<I")
        for _ in range(n_aliases):
            alias, target = string(), string()
            arrays[alias] = arrays[target]
    except CT2FormatError:
        raise
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise CT2FormatError(
            f"{path}: not a readable CTranslate2 model.bin ({e}); the file is truncated or of "
            "another format. Copy or convert the model again."
        ) from e
    return spec, arrays


class _BFloat16Array:
    """bfloat16 words kept as uint16 until torch widens them (numpy has no bfloat16)."""

    def __init__(self, words: np.ndarray) -> None:
        self.words = words
        self.shape = words.shape

    def tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.words.copy()).view(torch.bfloat16).float()


def _tensor(arrays: dict, name: str) -> torch.Tensor:
    """One array as a tensor: float16/float32 as stored (exact), bfloat16 widened, int8/int16
    weights divided by their row scales (CTranslate2 stores `round(weight * scale)`)."""
    array = arrays[name]
    if isinstance(array, _BFloat16Array):
        return array.tensor()
    if array.dtype in (np.int8, np.int16):
        scale = np.asarray(arrays[f"{name}_scale"], dtype=np.float32)
        return torch.from_numpy(
            array.astype(np.float32) / scale.reshape(-1, *[1] * (array.ndim - 1))
        )
    return torch.from_numpy(array.copy())


def _scalar(arrays: dict, name: str) -> int:
    return int(np.asarray(arrays[name]).reshape(()))


def _layers(arrays: dict, side: str) -> int:
    parts = {name.split("/")[1] for name in arrays if name.startswith(f"{side}/layer_")}
    return sum(part.removeprefix("layer_").isdigit() for part in parts)  # not layer_norm


def dims_from_arrays(arrays: dict) -> ModelDimensions:
    """Whisper's dimensions, read off the array shapes and the stored head counts."""
    conv1 = arrays["encoder/conv1/weight"].shape  # (n_audio_state, n_mels, 3)
    audio_positions = arrays["encoder/position_encodings/encodings"].shape
    text_positions = arrays["decoder/position_encodings/encodings"].shape
    return ModelDimensions(
        n_mels=conv1[1],
        n_audio_ctx=audio_positions[0],
        n_audio_state=conv1[0],
        n_audio_head=_scalar(arrays, "encoder/num_heads"),
        n_audio_layer=_layers(arrays, "encoder"),
        n_vocab=arrays["decoder/embeddings/weight"].shape[0],
        n_text_ctx=text_positions[0],
        n_text_state=text_positions[1],
        n_text_head=_scalar(arrays, "decoder/num_heads"),
        n_text_layer=_layers(arrays, "decoder"),
    )


def _linear(arrays: dict, ct2: str, whisper: str, bias: bool = True) -> dict[str, torch.Tensor]:
    out = {f"{whisper}.weight": _tensor(arrays, f"{ct2}/weight")}
    if bias:
        out[f"{whisper}.bias"] = _tensor(arrays, f"{ct2}/bias")
    return out


def _layer_norm(arrays: dict, ct2: str, whisper: str) -> dict[str, torch.Tensor]:
    return {
        f"{whisper}.weight": _tensor(arrays, f"{ct2}/gamma"),
        f"{whisper}.bias": _tensor(arrays, f"{ct2}/beta"),
    }


def _split_rows(tensor: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    return tuple(part.clone() for part in tensor.chunk(n, dim=0))


def _attention(arrays: dict, ct2: str, whisper: str, fused_from: int) -> dict[str, torch.Tensor]:
    """One attention block: `fused_from` 0 for self-attention (`linear_0` = q,k,v), 1 for
    cross-attention (`linear_0` = q, `linear_1` = k,v); the output projection follows."""
    names = ("query", "key", "value")
    weights = _tensor(arrays, f"{ct2}/linear_{fused_from}/weight")
    biases = _tensor(arrays, f"{ct2}/linear_{fused_from}/bias")
    fused = names[1:] if fused_from else names
    out: dict[str, torch.Tensor] = {}
    if fused_from:
        out.update(_linear(arrays, f"{ct2}/linear_0", f"{whisper}.query"))
    for name, weight, bias in zip(
        fused, _split_rows(weights, len(fused)), _split_rows(biases, len(fused)), strict=True
    ):
        out[f"{whisper}.{name}.weight"] = weight
        if name != "key":  # Whisper's key projection has no bias (CTranslate2 stores zeros)
            out[f"{whisper}.{name}.bias"] = bias
    out.update(_linear(arrays, f"{ct2}/linear_{fused_from + 1}", f"{whisper}.out"))
    return out


def _block(arrays: dict, ct2: str, whisper: str, cross: bool) -> dict[str, torch.Tensor]:
    state = _attention(arrays, f"{ct2}/self_attention", f"{whisper}.attn", fused_from=0)
    state |= _layer_norm(arrays, f"{ct2}/self_attention/layer_norm", f"{whisper}.attn_ln")
    if cross:
        state |= _attention(arrays, f"{ct2}/attention", f"{whisper}.cross_attn", fused_from=1)
        state |= _layer_norm(arrays, f"{ct2}/attention/layer_norm", f"{whisper}.cross_attn_ln")
    state |= _linear(arrays, f"{ct2}/ffn/linear_0", f"{whisper}.mlp.0")
    state |= _linear(arrays, f"{ct2}/ffn/linear_1", f"{whisper}.mlp.2")
    state |= _layer_norm(arrays, f"{ct2}/ffn/layer_norm", f"{whisper}.mlp_ln")
    return state


def whisper_state_dict(arrays: dict) -> tuple[ModelDimensions, dict[str, torch.Tensor]]:
    """openai-whisper's dimensions and state dict for CTranslate2 `WhisperSpec` arrays.

    Tensors keep the file's float dtype (float16 stays float16: `load_state_dict` widens it
    exactly); quantised weights are dequantised to float32.
    """
    dims = dims_from_arrays(arrays)
    state = {
        "encoder.positional_embedding": _tensor(arrays, "encoder/position_encodings/encodings"),
        "decoder.positional_embedding": _tensor(arrays, "decoder/position_encodings/encodings"),
        "decoder.token_embedding.weight": _tensor(arrays, "decoder/embeddings/weight"),
    }
    state |= _linear(arrays, "encoder/conv1", "encoder.conv1")
    state |= _linear(arrays, "encoder/conv2", "encoder.conv2")
    for i in range(dims.n_audio_layer):
        state |= _block(arrays, f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
    state |= _layer_norm(arrays, "encoder/layer_norm", "encoder.ln_post")
    for i in range(dims.n_text_layer):
        state |= _block(arrays, f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
    state |= _layer_norm(arrays, "decoder/layer_norm", "decoder.ln")
    return dims, state


def alignment_heads_mask(config: dict, dims: ModelDimensions) -> torch.Tensor | None:
    """config.json's `alignment_heads` ([[layer, head], …]) as Whisper's bool mask, or None.

    returns : torch.Tensor, shape = (n_text_layer, n_text_head), bool
    """
    pairs = config.get("alignment_heads")
    if not pairs:
        return None
    mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
    for layer, head in pairs:
        mask[layer, head] = True
    return mask


def load_ct2_model(folder: str | Path) -> Whisper:
    """An openai-whisper `Whisper` with the weights of a CTranslate2 Whisper model folder.

    Its alignment heads (for word timestamps) come from the folder's config.json. Quantised
    (int8/int16) weights are dequantised with a warning: the result is close to, not equal to,
    the model before quantisation.
    """
    folder = Path(folder)
    spec, arrays = read_model_bin(folder / "model.bin")
    if spec != "WhisperSpec":
        raise CT2FormatError(
            f"{folder}: a CTranslate2 {spec or 'unnamed'} model, not Whisper; give a Whisper "
            "model folder (as faster-whisper loads)."
        )
    if any(name.endswith("weight_scale") for name in arrays):
        warnings.warn(
            f"{folder}: quantised (int8/int16) weights were dequantised to float32: the model is "
            "close to, not exactly, the one before quantisation.",
            stacklevel=2,
        )
    dims, state = whisper_state_dict(arrays)
    model = Whisper(dims)
    # The encoder's sinusoidal positions are a buffer Whisper computes itself; the file's copy
    # is the same table, loaded to keep the conversion exact whatever it holds.
    model.load_state_dict(state)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    mask = alignment_heads_mask(config, dims)
    if mask is not None:
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model
