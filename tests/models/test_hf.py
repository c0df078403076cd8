"""Hugging Face Whisper folders: names both ways, exact round trip, transformers' view of them."""

import json

import pytest
import torch
from whisper.decoding import DecodingOptions, DecodingTask

from whisper_ft.models.hf import (
    HFModelError,
    alignment_heads,
    bpe_ranks,
    generation_config,
    hf_name,
    is_hf_folder,
    load_hf_model,
    openai_name,
    save_hf,
)
from whisper_ft.models.loading import ModelLoadError, load_base_model

transformers = pytest.importorskip(
    "transformers", reason="transformers (requirements-optional.txt) writes and runs HF folders"
)

# Logits of transformers' WhisperForConditionalGeneration vs openai-whisper's Whisper on the same
# weights, float32 on the CPU: the two only order the attention scaling differently
# (q·k·d^-0.5 vs (q·d^-0.25)·(k·d^-0.25)); measured max |Δ| 3e-7 on micro.
HF_LOGITS_ATOL = 1e-4


@pytest.fixture(scope="module")
def micro_model():
    torch.manual_seed(0)
    return load_base_model("random:micro").eval()


@pytest.fixture(scope="module")
def micro_hf(micro_model, tmp_path_factory):
    return save_hf(micro_model, tmp_path_factory.mktemp("hf") / "micro")


def test_names_map_both_ways_for_every_tensor(micro_model):
    names = list(micro_model.state_dict())
    hf_names = [hf_name(name) for name in names]
    assert [openai_name(name) for name in hf_names] == names
    assert hf_name("decoder.blocks.1.cross_attn.key.weight") == (
        "model.decoder.layers.1.encoder_attn.k_proj.weight"
    )
    assert hf_name("encoder.ln_post.bias") == "model.encoder.layer_norm.bias"
    assert hf_name("decoder.blocks.0.mlp.2.weight") == "model.decoder.layers.0.fc2.weight"


def test_openai_to_hf_to_openai_keeps_every_tensor(micro_model, micro_hf):
    assert sorted(p.name for p in micro_hf.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert is_hf_folder(micro_hf)
    back = load_base_model(str(micro_hf))  # the same path --model/--model.base_model take
    expected, actual = micro_model.state_dict(), back.state_dict()
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[k], expected[k]) for k in expected)
    assert back.dims == micro_model.dims
    assert alignment_heads(back) == alignment_heads(micro_model) == [[1, 0], [1, 1]]


def test_transformers_loads_it_and_its_logits_agree(micro_model, micro_hf):
    hf_model = transformers.WhisperForConditionalGeneration.from_pretrained(micro_hf).eval()
    torch.manual_seed(1)
    mel = torch.randn(2, 80, 3000)
    tokens = torch.tensor([[50258, 50266, 50359, 50363, 1000, 2000]] * 2)
    with torch.no_grad():
        expected = micro_model(mel, tokens)
        actual = hf_model(input_features=mel, decoder_input_ids=tokens).logits
    assert actual.shape == expected.shape == (2, 6, 51865)
    assert (actual - expected).abs().max() < HF_LOGITS_ATOL
    processor = transformers.WhisperProcessor.from_pretrained(micro_hf)
    assert processor.feature_extractor.feature_size == 80


def test_tokenizer_is_openai_whispers_vocabulary(micro_hf, ja_tokenizer):
    tokenizer = transformers.AutoTokenizer.from_pretrained(micro_hf)
    text = "今日は良い天気ですね。キョーワ Hello, world! 123円😀"
    assert tokenizer.encode(text, add_special_tokens=False) == ja_tokenizer.encode(text)
    assert tokenizer.decode(ja_tokenizer.encode(text)) == text
    ids = tokenizer.convert_tokens_to_ids(
        ["<|endoftext|>", "<|startoftranscript|>", "<|ja|>", "<|notimestamps|>", "<|0.00|>"]
    )
    assert ids == [50257, 50258, 50266, 50363, 50364]
    assert len(tokenizer) == 51865


def test_bpe_ranks_from_the_public_api_are_tiktokens_table(ja_tokenizer):
    encoding = ja_tokenizer.encoding
    ranks = bpe_ranks(encoding)
    assert ranks == encoding._mergeable_ranks  # the private table it replaces
    assert list(ranks.values()) == sorted(ranks.values())


def test_generation_config_decodes_as_openai_whisper(micro_model, micro_hf):
    config = json.loads((micro_hf / "generation_config.json").read_text())
    assert config.pop("transformers_version") == transformers.__version__
    assert config == generation_config(micro_model)
    assert config["lang_to_id"]["<|ja|>"] == 50266 and len(config["lang_to_id"]) == 99
    assert config["task_to_id"] == {"transcribe": 50359, "translate": 50358}
    assert config["no_timestamps_token_id"] == 50363
    assert config["begin_suppress_tokens"] == [220, 50257]
    assert config["alignment_heads"] == [[1, 0], [1, 1]]
    # the very list whisper.decode suppresses by default (suppress_tokens="-1")
    task = DecodingTask(micro_model, DecodingOptions(language="ja", without_timestamps=True))
    assert config["suppress_tokens"] == list(task._get_suppress_tokens())


def test_a_folder_of_pytorch_bin_weights_says_how_to_save_safetensors(micro_hf, tmp_path):
    folder = tmp_path / "bin_only"
    folder.mkdir()
    (folder / "config.json").write_text((micro_hf / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(HFModelError, match=r"no model\.safetensors .*pytorch_model\.bin.*safe_"):
        load_base_model(str(folder))


def test_a_model_openai_whisper_cannot_hold_is_refused(micro_hf, tmp_path):
    folder = tmp_path / "wide_mlp"
    folder.mkdir()
    config = json.loads((micro_hf / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "encoder_ffn_dim": 100}))
    with pytest.raises(HFModelError, match=r"config.json: encoder_ffn_dim = 100, but .* 4 × d_mo"):
        load_hf_model(folder)


def test_a_folder_that_is_neither_hf_nor_ct2_is_one_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert not is_hf_folder(tmp_path)
    with pytest.raises(ModelLoadError, match="nor a Hugging Face one"):
        load_base_model(str(tmp_path))


def test_large_v3_dims_and_vocabulary_map_both_ways():
    from whisper_ft.models.hf import config_sizes, dims_from_hf_config, whisper_tokenizer
    from whisper_ft.models.loading import RANDOM_DIMS

    dims = RANDOM_DIMS["large-v3"]
    config = transformers.WhisperConfig(**config_sizes(dims)).to_dict()
    assert (config["d_model"], config["decoder_layers"], config["num_mel_bins"]) == (1280, 32, 128)
    assert dims_from_hf_config(config) == dims
    tokenizer = whisper_tokenizer(dims)
    assert tokenizer.encoding.n_vocab == dims.n_vocab == 51866
    assert len(tokenizer.all_language_codes) == 100 and tokenizer.no_timestamps == 50364
