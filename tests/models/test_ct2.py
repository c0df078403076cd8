"""CTranslate2 Whisper folders read into openai-whisper: the format, the mapping, parity."""

import json
import struct

import numpy as np
import pytest
import torch
import whisper

from whisper_ft.models.ct2 import CT2FormatError, is_ct2_model_dir, load_ct2_model, read_model_bin
from whisper_ft.models.loading import load_base_model

DTYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int32): 3}
DTYPE_IDS[np.dtype(np.float16)] = 4


def _string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<H", len(data)) + data


def write_model_bin(path, arrays: dict[str, np.ndarray], aliases: dict[str, str]) -> None:
    """CTranslate2's model.bin layout (binary version 6), for hand-made test files."""
    out = struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<II", 3, len(arrays))
    for name, array in arrays.items():
        array = np.asarray(array, order="C")  # ascontiguousarray would make scalars 1-d
        out += _string(name) + struct.pack("<B", array.ndim)
        out += struct.pack(f"<{array.ndim}I", *array.shape)
        out += struct.pack("<BI", DTYPE_IDS[array.dtype], array.nbytes) + array.tobytes()
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += _string(alias) + _string(target)
    path.write_bytes(out)


def test_arrays_scalars_and_aliases_are_read(tmp_path):
    weight = np.arange(6, dtype=np.float16).reshape(2, 3)
    write_model_bin(
        tmp_path / "model.bin",
        {"decoder/embeddings/weight": weight, "decoder/num_heads": np.array(8, np.int32)},
        {"decoder/projection/weight": "decoder/embeddings/weight"},
    )
    spec, arrays = read_model_bin(tmp_path / "model.bin")
    assert spec == "WhisperSpec"
    np.testing.assert_array_equal(arrays["decoder/embeddings/weight"], weight)
    assert arrays["decoder/projection/weight"] is arrays["decoder/embeddings/weight"]
    assert int(arrays["decoder/num_heads"]) == 8


def test_truncated_model_bin_is_one_error_naming_the_file(tmp_path):
    write_model_bin(tmp_path / "model.bin", {"w": np.ones((4, 4), np.float32)}, {})
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CT2FormatError, match=r"model.bin: not a readable CTranslate2 model.bin"):
        read_model_bin(tmp_path / "model.bin")


def test_folder_without_config_is_not_a_model_and_says_what_to_give(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"")
    assert not is_ct2_model_dir(tmp_path)
    with pytest.raises(Exception, match="not a CTranslate2 Whisper model"):
        load_base_model(str(tmp_path))


def _ct2_arrays_of(model: whisper.model.Whisper, quantize: bool = False) -> dict:
    """CTranslate2's arrays for a Whisper model, written by hand from the documented layout
    (the inverse of the reader: q,k,v fused with a zero key bias; cross k,v fused)."""
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    arrays: dict[str, np.ndarray] = {}

    def linear(ct2, name, bias=True):
        arrays[f"{ct2}/weight"] = sd[f"{name}.weight"]
        if bias:
            arrays[f"{ct2}/bias"] = sd[f"{name}.bias"]

    def norm(ct2, name):
        arrays[f"{ct2}/gamma"], arrays[f"{ct2}/beta"] = sd[f"{name}.weight"], sd[f"{name}.bias"]

    def block(ct2, name, cross):
        a = f"{name}.attn"
        arrays[f"{ct2}/self_attention/linear_0/weight"] = np.concatenate(
            [sd[f"{a}.query.weight"], sd[f"{a}.key.weight"], sd[f"{a}.value.weight"]]
        )
        zeros = np.zeros_like(sd[f"{a}.query.bias"])
        arrays[f"{ct2}/self_attention/linear_0/bias"] = np.concatenate(
            [sd[f"{a}.query.bias"], zeros, sd[f"{a}.value.bias"]]
        )
        linear(f"{ct2}/self_attention/linear_1", f"{a}.out")
        norm(f"{ct2}/self_attention/layer_norm", f"{name}.attn_ln")
        if cross:
            c = f"{name}.cross_attn"
            linear(f"{ct2}/attention/linear_0", f"{c}.query")
            arrays[f"{ct2}/attention/linear_1/weight"] = np.concatenate(
                [sd[f"{c}.key.weight"], sd[f"{c}.value.weight"]]
            )
            arrays[f"{ct2}/attention/linear_1/bias"] = np.concatenate(
                [zeros, sd[f"{c}.value.bias"]]
            )
            linear(f"{ct2}/attention/linear_2", f"{c}.out")
            norm(f"{ct2}/attention/layer_norm", f"{name}.cross_attn_ln")
        linear(f"{ct2}/ffn/linear_0", f"{name}.mlp.0")
        linear(f"{ct2}/ffn/linear_1", f"{name}.mlp.2")
        norm(f"{ct2}/ffn/layer_norm", f"{name}.mlp_ln")

    dims = model.dims
    linear("encoder/conv1", "encoder.conv1")
    linear("encoder/conv2", "encoder.conv2")
    arrays["encoder/position_encodings/encodings"] = sd["encoder.positional_embedding"]
    for i in range(dims.n_audio_layer):
        block(f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
    norm("encoder/layer_norm", "encoder.ln_post")
    arrays["encoder/num_heads"] = np.array(dims.n_audio_head, np.int32)
    arrays["decoder/embeddings/weight"] = sd["decoder.token_embedding.weight"]
    arrays["decoder/position_encodings/encodings"] = sd["decoder.positional_embedding"]
    for i in range(dims.n_text_layer):
        block(f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
    norm("decoder/layer_norm", "decoder.ln")
    arrays["decoder/num_heads"] = np.array(dims.n_text_head, np.int32)
    if quantize:  # CTranslate2's int8: round(w * scale), scale = 127 / max |row|
        for name in [n for n in arrays if n.endswith("/weight") and arrays[n].ndim == 2]:
            w = arrays[name].astype(np.float32)
            scale = 127.0 / np.abs(w).max(axis=1).clip(min=1e-8)
            arrays[name] = np.round(w * scale[:, None]).astype(np.int8)
            arrays[f"{name}_scale"] = scale.astype(np.float32)
    return arrays


def _write_folder(folder, model, quantize=False, heads=None):
    folder.mkdir()
    write_model_bin(folder / "model.bin", _ct2_arrays_of(model, quantize), {})
    (folder / "config.json").write_text(json.dumps({"alignment_heads": heads or []}))
    return folder


def test_a_micro_model_round_trips_exactly_with_its_alignment_heads(tmp_path):
    torch.manual_seed(0)
    original = load_base_model("random:micro")
    folder = _write_folder(tmp_path / "ct2", original, heads=[[1, 0], [1, 1]])
    converted = load_base_model(str(folder))
    assert converted.dims == original.dims
    for name, tensor in original.state_dict().items():
        assert torch.equal(converted.state_dict()[name], tensor), name
    expected = torch.tensor([[False, False], [True, True]])
    assert torch.equal(converted.alignment_heads, expected)


def test_int8_weights_dequantise_close_with_a_warning(tmp_path):
    torch.manual_seed(0)
    original = load_base_model("random:micro")
    folder = _write_folder(tmp_path / "ct2", original, quantize=True)
    with pytest.warns(UserWarning, match="dequantised to float32"):
        converted = load_ct2_model(folder)
    w, v = original.decoder.blocks[0].mlp[0].weight, converted.decoder.blocks[0].mlp[0].weight
    row_max = w.abs().amax(dim=1, keepdim=True)
    assert ((w - v).abs() <= row_max / 127 / 2 + 1e-6).all()  # half a quantisation step
    assert not torch.equal(w, v)


def test_converted_base_decodes_the_same_tokens_as_the_ctranslate2_runtime(
    pretrained_base, pretrained_base_dir, spoken_sentences
):
    ctranslate2 = pytest.importorskip("ctranslate2", reason="optional extra: ctranslate2")
    runtime = ctranslate2.models.Whisper(str(pretrained_base_dir), compute_type="float32")
    tokenizer = whisper.tokenizer.get_tokenizer(True, language="ja", task="transcribe")
    prompt = list(tokenizer.sot_sequence_including_notimestamps)
    options = whisper.DecodingOptions(language="ja", without_timestamps=True, fp16=False)
    for text, audio in spoken_sentences:
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)))
        ours = pretrained_base.decode(mel, options).tokens
        features = ctranslate2.StorageView.from_array(mel[None].numpy())
        theirs = runtime.generate(features, [prompt], beam_size=1)[0].sequences_ids[0]
        assert ours == [t for t in theirs if t < tokenizer.eot], text
