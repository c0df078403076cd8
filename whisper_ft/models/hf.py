"""Hugging Face Whisper folders both ways: openai-whisper names ↔ `WhisperForConditionalGeneration`.

Reading (`is_hf_folder`, `load_hf_model`) needs only `safetensors`: `load_base_model` uses it, so
`--model.base_model`, `transcribe --model` and `serve --model` take a folder fine-tuned elsewhere.
Writing (`save_hf`) needs `transformers` (imported there only) for the config, generation config,
tokenizer and feature-extractor files, all made offline from openai-whisper's own tokenizer.

The weights map one to one (no tensor is split, fused or rescaled), so openai → hf → openai keeps
every tensor exactly; `proj_out.weight` is the token embedding, as in both libraries.
"""

import json
from pathlib import Path

import torch
import whisper.tokenizer
from whisper.model import ModelDimensions, Whisper

from whisper_ft.decoding import SETTINGS_FILE, DecodingSettings

# openai-whisper name fragment → Hugging Face name fragment, applied in this order.
_RENAMES = (
    ("encoder.positional_embedding", "encoder.embed_positions.weight"),
    ("decoder.positional_embedding", "decoder.embed_positions.weight"),
    ("decoder.token_embedding", "decoder.embed_tokens"),
    ("encoder.ln_post.", "encoder.layer_norm."),
    ("decoder.ln.", "decoder.layer_norm."),
    (".blocks.", ".layers."),
    (".cross_attn_ln.", ".encoder_attn_layer_norm."),
    (".cross_attn.query.", ".encoder_attn.q_proj."),
    (".cross_attn.key.", ".encoder_attn.k_proj."),
    (".cross_attn.value.", ".encoder_attn.v_proj."),
    (".cross_attn.out.", ".encoder_attn.out_proj."),
    (".attn_ln.", ".self_attn_layer_norm."),
    (".attn.query.", ".self_attn.q_proj."),
    (".attn.key.", ".self_attn.k_proj."),
    (".attn.value.", ".self_attn.v_proj."),
    (".attn.out.", ".self_attn.out_proj."),
    (".mlp_ln.", ".final_layer_norm."),
    (".mlp.0.", ".fc1."),
    (".mlp.2.", ".fc2."),
)
_PREFIX = "model."  # WhisperForConditionalGeneration keeps encoder and decoder under `model`
_PROJ_OUT = "proj_out.weight"  # tied to the token embedding; not stored


class HFModelError(ValueError):
    """A Hugging Face folder that cannot become an openai-whisper model; says which file and why."""


def hf_name(name: str) -> str:
    """The `WhisperForConditionalGeneration` state-dict key of an openai-whisper key."""
    for old, new in _RENAMES:
        name = name.replace(old, new)
    return _PREFIX + name


def openai_name(name: str) -> str:
    """The openai-whisper state-dict key of a `WhisperForConditionalGeneration` key."""
    name = name.removeprefix(_PREFIX)
    for old, new in reversed(_RENAMES):
        name = name.replace(new, old)
    return name


def to_hf_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """openai-whisper tensors under Hugging Face names (the same tensors, contiguous)."""
    return {hf_name(k): v.contiguous() for k, v in state_dict.items()}


def from_hf_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face tensors under openai-whisper names; `proj_out.weight` (the tied output
    projection) is dropped after checking it is the token embedding."""
    state_dict = dict(state_dict)
    proj_out = state_dict.pop(_PROJ_OUT, None)
    embedding = state_dict.get(_PREFIX + "decoder.embed_tokens.weight")
    if proj_out is not None and embedding is not None and not torch.equal(proj_out, embedding):
        raise HFModelError(
            "proj_out.weight differs from model.decoder.embed_tokens.weight; openai-whisper ties "
            "the output projection to the token embedding, so this model cannot be converted."
        )
    return {openai_name(k): v for k, v in state_dict.items()}


def dims_from_hf_config(config: dict, path: str | Path = "config.json") -> ModelDimensions:
    """openai-whisper's `ModelDimensions` from a Hugging Face Whisper `config.json` dict."""
    if config.get("model_type") != "whisper":
        raise HFModelError(f"{path}: model_type is {config.get('model_type')!r}, not 'whisper'.")
    d_model = config["d_model"]
    for key in ("encoder_ffn_dim", "decoder_ffn_dim"):
        if config.get(key, 4 * d_model) != 4 * d_model:
            raise HFModelError(
                f"{path}: {key} = {config[key]}, but openai-whisper's MLP is 4 × d_model "
                f"= {4 * d_model}; this model cannot be converted."
            )
    if config.get("scale_embedding", False) or config.get("activation_function", "gelu") != "gelu":
        raise HFModelError(
            f"{path}: scale_embedding/activation_function differ from openai-whisper's "
            "(false/gelu); this model cannot be converted."
        )
    return ModelDimensions(
        n_mels=config["num_mel_bins"],
        n_audio_ctx=config["max_source_positions"],
        n_audio_state=d_model,
        n_audio_head=config["encoder_attention_heads"],
        n_audio_layer=config["encoder_layers"],
        n_vocab=config["vocab_size"],
        n_text_ctx=config["max_target_positions"],
        n_text_state=d_model,
        n_text_head=config["decoder_attention_heads"],
        n_text_layer=config["decoder_layers"],
    )


def is_hf_folder(path: str | Path) -> bool:
    """Whether `path` is a folder with a Hugging Face Whisper `config.json`."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "whisper"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [folder / shard for shard in shards]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    others = sorted(p.name for p in folder.glob("*.bin")) or ["none"]
    raise HFModelError(
        f"{folder}: no model.safetensors (or model.safetensors.index.json); found weights: "
        f"{', '.join(others)}. Save the model with "
        "`WhisperForConditionalGeneration.save_pretrained(folder, safe_serialization=True)`."
    )


def load_hf_model(folder: str | Path) -> Whisper:
    """An openai-whisper model from a Hugging Face `WhisperForConditionalGeneration` folder
    (`config.json` + safetensors; `generation_config.json`'s alignment heads if present).
    Weights are cast to float32, as openai-whisper's parameters are."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path = folder / "config.json"
    dims = dims_from_hf_config(json.loads(config_path.read_text(encoding="utf-8")), config_path)
    state_dict = {}
    for file in _safetensors_files(folder):
        state_dict.update(load_file(file))
    model = Whisper(dims)
    expected = set(model.state_dict())
    converted = from_hf_state_dict(state_dict)
    missing, unexpected = expected - converted.keys(), converted.keys() - expected
    if missing or unexpected:
        raise HFModelError(
            f"{folder}: weights do not match a Whisper of these dims: missing "
            f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]} (of {len(missing)} and "
            f"{len(unexpected)})."
        )
    model.load_state_dict({k: v.float() for k, v in converted.items()})
    generation = folder / "generation_config.json"
    heads = json.loads(generation.read_text(encoding="utf-8")) if generation.is_file() else {}
    if heads.get("alignment_heads"):
        set_alignment_heads(model, heads["alignment_heads"])
    return model


def set_alignment_heads(model: Whisper, heads: list[list[int]]) -> Whisper:
    """Make `[[layer, head], …]` the model's alignment heads (a dense bool buffer, as
    `loading.dense_alignment_heads` keeps them).

    alignment_heads : torch.Tensor, shape = (n_text_layer, n_text_head), bool
    """
    mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
    for layer, head in heads:
        mask[layer, head] = True
    model.register_buffer("alignment_heads", mask, persistent=False)
    return model


def alignment_heads(model: Whisper) -> list[list[int]]:
    """The model's alignment heads as `[[layer, head], …]` (Whisper keeps them as a mask)."""
    mask = model.alignment_heads
    mask = mask.to_dense() if mask.layout != torch.strided else mask
    return [[int(layer), int(head)] for layer, head in mask.nonzero().tolist()]


def whisper_tokenizer(dims: ModelDimensions) -> whisper.tokenizer.Tokenizer:
    """openai-whisper's tokenizer for a model of these dims (multilingual, language count)."""
    multilingual = dims.n_vocab >= 51865
    return whisper.tokenizer.get_tokenizer(
        multilingual, num_languages=dims.n_vocab - 51765 - int(multilingual), task="transcribe"
    )


def suppress_tokens(tokenizer: whisper.tokenizer.Tokenizer) -> list[int]:
    """The tokens openai-whisper's decoding suppresses by default (`suppress_tokens="-1"`):
    non-speech symbols plus the task/SOT/no-speech specials, as `DecodingTask` builds them.
    faster-whisper's `suppress_tokens=[-1]` builds the same list."""
    specials = [tokenizer.transcribe, tokenizer.translate, tokenizer.sot, tokenizer.sot_prev]
    specials += [tokenizer.sot_lm] + ([tokenizer.no_speech] if tokenizer.no_speech else [])
    return sorted(set(tokenizer.non_speech_tokens) | set(specials))


def generation_config(model: Whisper, settings: DecodingSettings | None = None) -> dict:
    """`generation_config.json` for transformers' Whisper `generate`, from openai-whisper's
    tokenizer: language and task ids, the no-timestamps token, alignment heads and the
    suppression lists openai-whisper uses, so `generate` decodes as `whisper.decode` does.
    With `settings` (a fine-tune's), its language and task are `generate`'s defaults."""
    tokenizer = whisper_tokenizer(model.dims)
    languages = tokenizer.all_language_codes if tokenizer.encoding.name != "gpt2" else ()
    eot = tokenizer.eot
    config = {
        "alignment_heads": alignment_heads(model),
        "begin_suppress_tokens": [tokenizer.encode(" ")[0], eot],
        "bos_token_id": eot,
        "decoder_start_token_id": tokenizer.sot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "is_multilingual": bool(languages),
        "max_initial_timestamp_index": 50,  # openai-whisper's max_initial_timestamp 1.0 s / 0.02
        "max_length": model.dims.n_text_ctx,
        "no_timestamps_token_id": tokenizer.no_timestamps,
        "prev_sot_token_id": tokenizer.sot_prev,
        "return_timestamps": False,
        "suppress_tokens": suppress_tokens(tokenizer),
    }
    if languages:
        config["lang_to_id"] = {
            f"<|{code}|>": token
            for code, token in zip(
                tokenizer.all_language_codes, tokenizer.all_language_tokens, strict=True
            )
        }
        config["task_to_id"] = {
            "transcribe": tokenizer.transcribe,
            "translate": tokenizer.translate,
        }
        task = (
            tokenizer.translate
            if settings and settings.task == "translate"
            else tokenizer.transcribe
        )
        config["forced_decoder_ids"] = [[1, None], [2, task]]
        if settings is not None:
            config["language"] = f"<|{settings.language}|>"
            config["task"] = settings.task
    else:
        config["forced_decoder_ids"] = [[1, tokenizer.no_timestamps]]
    return config


def _bpe_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    # Byte-pair merging of `token` with the merges ranked below `max_rank`: the last two parts
    # are the merge that made the token (tiktoken stores ranks, Hugging Face needs merges).
    parts = [bytes([b]) for b in token]
    while True:
        pairs = [(ranks.get(parts[i] + parts[i + 1]), i) for i in range(len(parts) - 1)]
        rank, i = min(((r, i) for r, i in pairs if r is not None), default=(None, None))
        if rank is None or rank >= max_rank:
            return parts
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def bpe_ranks(encoding) -> dict[bytes, int]:
    """A tiktoken `Encoding`'s byte-level BPE table, token bytes → rank (= id), in rank order,
    from its public API: the same table as its private `_mergeable_ranks`."""
    ranks = {token: encoding.encode_single_token(token) for token in encoding.token_byte_values()}
    return dict(sorted(ranks.items(), key=lambda item: item[1]))


def hf_tokenizer(dims: ModelDimensions):
    """A transformers `WhisperTokenizer` with openai-whisper's vocabulary (from its tiktoken
    file, offline): byte-level BPE vocab and merges, the specials as special tokens and the
    timestamps as added tokens, all at openai-whisper's ids."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    encoding = whisper_tokenizer(dims).encoding
    as_text = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(as_text[b] for b in token)

    ranks = bpe_ranks(encoding)
    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in ranks.items():
        parts = _bpe_parts(ranks, token, rank) if len(token) > 1 else []
        if len(parts) == 2:
            merges.append((text(parts[0]), text(parts[1])))
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges)
    specials = sorted(
        ((name, encoding.encode_single_token(name)) for name in encoding.special_tokens_set),
        key=lambda item: item[1],
    )
    for name, token_id in specials:
        timestamp = name.startswith("<|") and name[2:3].isdigit()
        added = AddedToken(name, special=not timestamp, normalized=timestamp)
        tokenizer.add_tokens([added], special_tokens=not timestamp)
        if tokenizer.convert_tokens_to_ids(name) != token_id:
            raise HFModelError(f"tokenizer: {name} got id {tokenizer.convert_tokens_to_ids(name)}")
    return tokenizer


def hf_config(model: Whisper):
    """transformers' `WhisperConfig` for this model's dims and token ids (float32 weights)."""
    from transformers import WhisperConfig

    generation = generation_config(model)
    return WhisperConfig(
        **config_sizes(model.dims),
        decoder_start_token_id=generation["decoder_start_token_id"],
        pad_token_id=generation["pad_token_id"],
        bos_token_id=generation["bos_token_id"],
        eos_token_id=generation["eos_token_id"],
        # generation_config.json holds the suppression lists; copies here would make
        # transformers warn that both are set.
        suppress_tokens=None,
        begin_suppress_tokens=None,
        architectures=["WhisperForConditionalGeneration"],
        dtype="float32",
    )


def config_sizes(dims: ModelDimensions) -> dict[str, int]:
    """`WhisperConfig`'s size fields for `dims`; `dims_from_hf_config` reads them back."""
    return {
        "vocab_size": dims.n_vocab,
        "num_mel_bins": dims.n_mels,
        "d_model": dims.n_text_state,
        "encoder_layers": dims.n_audio_layer,
        "encoder_attention_heads": dims.n_audio_head,
        "encoder_ffn_dim": 4 * dims.n_audio_state,
        "decoder_layers": dims.n_text_layer,
        "decoder_attention_heads": dims.n_text_head,
        "decoder_ffn_dim": 4 * dims.n_text_state,
        "max_source_positions": dims.n_audio_ctx,
        "max_target_positions": dims.n_text_ctx,
    }


def save_hf(model: Whisper, out_dir: str | Path, settings: DecodingSettings | None = None) -> Path:
    """Write `model` as a Hugging Face `WhisperForConditionalGeneration` folder, offline:
    `model.safetensors` (float32), `config.json`, `generation_config.json`, the tokenizer files
    and `preprocessor_config.json`; with a fine-tune's `settings`, also `SETTINGS_FILE` and
    its language and task in the generation config.
    `WhisperForConditionalGeneration.from_pretrained(out_dir)` and
    `WhisperProcessor.from_pretrained(out_dir)` load it."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig, WhisperFeatureExtractor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_dict = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    save_file(to_hf_state_dict(state_dict), out_dir / "model.safetensors", {"format": "pt"})
    hf_config(model).save_pretrained(out_dir)
    GenerationConfig(**generation_config(model, settings)).save_pretrained(out_dir)
    hf_tokenizer(model.dims).save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=model.dims.n_mels).save_pretrained(out_dir)
    if settings is not None:
        (out_dir / SETTINGS_FILE).write_text(json.dumps(settings.as_dict(), indent=2) + "\n")
    return out_dir
