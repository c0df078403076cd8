import urllib.error

import whisper

from whisper_ft.demo import run_demo


def test_demo_offline_falls_back_trains_evaluates_and_exports(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(whisper, "load_model", offline)
    result = run_demo(
        tmp_path, max_steps=3, n_sentences=12, n_speakers=3, offline_model="random:micro"
    )
    printed = capsys.readouterr().out
    fallback = [line for line in printed.splitlines() if "could not download Whisper tiny" in line]
    assert len(fallback) == 1 and "continuing with random:micro" in fallback[0]
    assert result.base_model == "random:micro"
    assert result.checkpoint.is_file() and result.exported.is_file()
    monkeypatch.undo()
    assert whisper.load_model(str(result.exported)).dims.n_text_state == 64
    assert {"val_loss", "val_cer", "val_wer"} <= result.val_before.keys() <= result.val_after.keys()
    assert result.train_loss_first > 10  # random start: about ln(51865)
    for line in ("train loss", "val CER", "test CER / WER", "exported .pt", "random weights"):
        assert line in printed
