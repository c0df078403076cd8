import pytest
import torch
import whisper

from whisper_ft.data import WhisperDataModule
from whisper_ft.model import ModelLoadError, export_checkpoint, load_base_model
from whisper_ft.transcribe import load_for_transcription, transcribe_files


@pytest.fixture
def trained_checkpoint(micro, corpus, tmp_path, make_trainer):
    """micro after 2 training steps, saved as a Lightning checkpoint."""
    trainer = make_trainer(max_steps=2, logger=False)
    trainer.fit(micro, WhisperDataModule(str(corpus["train"]), batch_size=4, num_workers=0))
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_export_round_trip_keeps_every_tensor_and_the_logits(micro, trained_checkpoint, tmp_path):
    ckpt = trained_checkpoint
    out = export_checkpoint(ckpt, tmp_path / "export" / "model.pt")
    loaded = whisper.load_model(str(out), device="cpu")
    expected = micro.model.state_dict()
    actual = loaded.state_dict()
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[k], expected[k]) for k in expected)
    assert loaded.dims == micro.model.dims
    torch.manual_seed(0)
    mel = torch.randn(2, 80, 3000)
    tokens = torch.tensor([[50258, 50266, 50359, 50363, 1000]] * 2)
    micro.model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(mel, tokens), micro.model(mel, tokens))
    # whisper's own long-form pipeline runs on the exported file (an array: no ffmpeg needed)
    silence = torch.zeros(16000).numpy()
    result = whisper.transcribe(loaded, silence, temperature=0.0, language="ja", fp16=False)
    assert isinstance(result["text"], str)


def test_transcribe_gives_the_same_text_from_ckpt_and_exported_pt(
    trained_checkpoint, corpus, tmp_path
):
    ckpt = trained_checkpoint
    pt = export_checkpoint(ckpt, tmp_path / "model.pt")
    wavs = sorted(str(p) for p in (corpus["test"].parent / "wav").rglob("*.wav"))[:3]
    from_ckpt = list(transcribe_files(str(ckpt), wavs, batch_size=2, device="cpu"))
    from_pt = list(transcribe_files(str(pt), wavs, batch_size=2, device="cpu"))
    assert [path for path, _ in from_ckpt] == wavs
    assert from_ckpt == from_pt
    assert load_for_transcription(str(ckpt), torch.device("cpu"))[1] == "ja"


def test_export_refuses_a_foreign_checkpoint(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ModelLoadError, match="not a whisper-ft checkpoint"):
        export_checkpoint(tmp_path / "other.ckpt", tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(ModelLoadError, match=r"missing.ckpt: no such checkpoint\. fit writes"):
        export_checkpoint(tmp_path / "missing.ckpt", tmp_path / "x.pt")


def test_ckpt_loads_as_a_base_model(micro, trained_checkpoint):
    model = load_base_model(str(trained_checkpoint))
    assert torch.equal(
        model.decoder.token_embedding.weight, micro.model.decoder.token_embedding.weight
    )


@pytest.mark.parametrize("micro", [{"lora_rank": 4, "lr": 0.05}], indirect=True)
def test_lora_adapters_are_merged_on_export(micro, trained_checkpoint, tmp_path):
    pytest.importorskip("peft", reason="optional extra: peft")
    adapters = [n for n, p in micro.model.named_parameters() if p.requires_grad]
    assert adapters and all(".lora_" in n for n in adapters)
    out = export_checkpoint(trained_checkpoint, tmp_path / "lora.pt")
    loaded = whisper.load_model(str(out), device="cpu")
    assert not any("lora" in k or "base_layer" in k for k in loaded.state_dict())
    mel = torch.randn(1, 80, 3000)
    tokens = torch.tensor([[50258, 50266, 50359, 50363, 1000]])
    micro.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(mel, tokens), micro.model(mel, tokens), atol=1e-5, rtol=0)
    # B starts at zero; two steps at lr 0.05 moved it, so the merge had something to add
    state = torch.load(trained_checkpoint, weights_only=True)["state_dict"]
    assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)
