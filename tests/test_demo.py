import torch
import whisper

from whisper_ft.demo import run_demo


def test_demo_offline_falls_back_trains_evaluates_and_exports(
    tmp_path, monkeypatch, capsys, offline
):
    result = run_demo(
        tmp_path, max_steps=3, n_sentences=12, n_speakers=3, offline_model="random:micro"
    )
    printed = capsys.readouterr().out
    fallback = [line for line in printed.splitlines() if "could not download Whisper tiny" in line]
    assert len(fallback) == 1 and "continuing with random:micro" in fallback[0]
    assert result.base_model == "random:micro"
    assert result.checkpoint.is_file() and result.exported.is_file()
    assert "![per-utterance CER](cer_histogram.png)" in result.report.read_text(encoding="utf-8")
    assert (result.report.parent / "cer_histogram.png").is_file()
    monkeypatch.undo()
    assert whisper.load_model(str(result.exported)).dims.n_text_state == 64
    assert {"val_loss", "val_cer", "val_wer"} <= result.val_before.keys() <= result.val_after.keys()
    assert result.train_loss_first > 10  # random start: about ln(51865)
    for line in (
        "train loss",
        "val CER",
        "test CER / WER",
        "exported .pt",
        "report",
        "random weights",
    ):
        assert line in printed


def test_demo_online_fine_tunes_pretrained_tiny_with_a_frozen_encoder(tmp_path, monkeypatch):
    from whisper_ft.model import load_base_model

    loaded = []

    def pretend_download(name, *args, **kwargs):  # no network in tests: a small stand-in
        loaded.append(name)
        return load_base_model("random:micro")

    monkeypatch.setattr(whisper, "load_model", pretend_download)
    result = run_demo(tmp_path, max_steps=2, n_sentences=12, n_speakers=3)
    assert loaded == ["tiny"] and result.base_model == "tiny"
    checkpoint = torch.load(result.checkpoint, weights_only=True)
    assert checkpoint["hyper_parameters"]["freeze_encoder"] is True
    assert checkpoint["global_step"] == 2
