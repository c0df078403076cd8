"""Views of a training utterance in the encoder-feature cache (`cache_views`): each view's
values (mel = whisper.transcribe's window, noise at its SNR, speed's length), the audio view's
folders as before views, the draw per (seed, epoch, index), and the errors."""

import json

import numpy as np
import pytest
import torch
import whisper
from feature_helpers import FP16_RTOL, build, count_rows, sine_fixtures
from whisper.audio import N_FRAMES, N_SAMPLES, SAMPLE_RATE

from whisper_ft.audio import transcribe_window_mel, window_mel
from whisper_ft.data.feature_cache import (
    CachedFeatures,
    FeatureCacheError,
    FeatureCacheKey,
    SampledViews,
)
from whisper_ft.data.sampler import BucketingBatchSampler
from whisper_ft.data.views import (
    AUDIO,
    View,
    check_speed_fits,
    parse_views,
    view_mel_batch,
    view_waveform,
)
from whisper_ft.data.windows import WindowDataset, window_choices

manifest, dataset, model = sine_fixtures()
MEL = View("mel")


def _chirp(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.01 * rng.standard_normal(len(t))
    return wave.astype(np.float32)


class _Captured(Exception):
    pass


def _transcribe_window(model, audio: np.ndarray) -> torch.Tensor:
    """The mel whisper.transcribe hands the encoder first, caught at the encoder's call."""
    seen = []

    def capture(mel):
        seen.append(mel.detach().clone())
        raise _Captured

    model.encoder.forward = capture
    with pytest.raises(_Captured):
        whisper.transcribe(model, audio, language="ja", fp16=False, verbose=None)
    del model.encoder.forward
    return seen[0][0]


def test_the_mel_view_is_the_window_whisper_transcribe_feeds_the_encoder(model):
    audio = _chirp(1.37)
    theirs = _transcribe_window(model, audio)  # (n_mels, N_FRAMES)
    ours = transcribe_window_mel(torch.from_numpy(audio), model.dims.n_mels)
    assert ours.shape == theirs.shape == (model.dims.n_mels, N_FRAMES)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    padded = torch.from_numpy(whisper.pad_or_trim(audio))[None]
    batch = view_mel_batch(padded, torch.tensor([len(audio)]), MEL, model.dims.n_mels)
    torch.testing.assert_close(batch[0], theirs, rtol=0, atol=1e-6)
    # What differs from training's window: zeros in the log-mel after the content frames,
    # where the audio view has the log-mel of silence (its clamped floor).
    content = len(audio) // 160
    assert torch.all(ours[:, content:] == 0)
    audio_view = window_mel([audio], model.dims.n_mels)[0]
    assert torch.all(audio_view[:, content + 3 :] < -0.5)  # past the STFT window's reach


def test_the_cached_mel_view_is_the_encoder_output_of_transcribes_window(model, dataset, tmp_path):
    cache = build(model, dataset, tmp_path / "cache", view=MEL)
    assert cache.path.name.startswith("train-mel-")
    audio = dataset[2]["audio"]
    with torch.no_grad():
        expected = model.encoder(_transcribe_window(model, audio)[None])[0]
    torch.testing.assert_close(
        cache.features(2).float(), expected, rtol=FP16_RTOL, atol=1e-3 * expected.abs().max()
    )


def test_the_audio_view_keeps_the_folders_and_files_of_the_cache_before_views(
    model, dataset, tmp_path
):
    key = FeatureCacheKey(
        encoder_sha256="0" * 64, n_mels=80, n_samples=480000, sample_rate=16000, n_fft=400,
        hop_length=160, whisper_version="20250625", dtype="float16", compute_dtype="float32",
        utterances=(("u0", "wav/u0.wav"),),
    )  # fmt: skip
    # The digest this key had before views existed: existing caches are found again.
    assert key.digest() == "d2518c37a2ac3ce6f1206308fe97b72b004e3ed1f1c2d41c4c3609fadfe51b03"
    assert FeatureCacheKey(**{**key.as_dict(), "view": "mel"}).digest() != key.digest()

    before = build(model, dataset, tmp_path / "before")
    audio = build(model, dataset, tmp_path / "views", view=AUDIO)
    assert audio.path.name == before.path.name  # train-<digest>, no view in it
    assert (audio.path / "features.f16").read_bytes() == (before.path / "features.f16").read_bytes()
    assert "view" not in json.loads((audio.path / "meta.json").read_text())["key"]


def test_a_fit_with_views_reuses_the_audio_cache_and_builds_each_other_view_once(
    manifest, dataset, make_trainer, tmp_path, capsys
):
    from whisper_ft.data.datamodule import WhisperDataModule
    from whisper_ft.training.module import WhisperFineTuner

    torch.manual_seed(0)
    module = WhisperFineTuner(base_model="random:micro", lr_warmup_steps=0)
    build(module.model, dataset, tmp_path / "features")  # the cache a fit without views made
    capsys.readouterr()
    rows = count_rows(module.model)
    data = WhisperDataModule(train_manifest=str(manifest), batch_size=4, num_workers=0,
                             feature_cache=str(tmp_path / "features"),
                             cache_views=["audio", "mel", "noise:5"])  # fmt: skip
    make_trainer(max_steps=2, limit_val_batches=0).fit(module, data)
    out = capsys.readouterr().out
    assert "views: audio, mel, noise:5: 3 encoder passes per training utterance" in out
    assert "complete (4 utterances), reused" in out  # the audio view's folder
    assert sum(rows) == 8  # mel and noise computed, 4 utterances each; audio not again
    names = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "features").glob("train*-*"))
    assert names == ["train", "train-mel", "train-noise5"]
    train = data.datasets["train"]
    assert isinstance(train, SampledViews)
    [batch] = list(data.train_dataloader())[:1]
    assert batch["features"].shape == (4, 1500, 64)


def test_noise_view_has_its_snr_and_is_fixed_by_utterance_and_view():
    audio = _chirp(2.0)
    for snr in (0.0, 10.0, 25.0):
        noisy = view_waveform(audio, View("noise", snr), "u7")
        noise = noisy.astype(np.float64) - audio
        measured = 10 * np.log10(np.mean(audio.astype(np.float64) ** 2) / np.mean(noise**2))
        assert abs(measured - snr) < 0.5
        assert noisy.dtype == np.float32 and noisy.shape == audio.shape
    again = view_waveform(audio, View("noise", 10.0), "u7")
    np.testing.assert_array_equal(again, view_waveform(audio, View("noise", 10.0), "u7"))
    assert not np.array_equal(again, view_waveform(audio, View("noise", 10.0), "u8"))


def test_speed_view_length_and_duration(model, dataset, tmp_path):
    audio = _chirp(2.0)
    assert len(view_waveform(audio, View("speed", 1.25), "u")) == round(len(audio) / 1.25)
    assert len(view_waveform(audio, View("speed", 0.8), "u")) == round(len(audio) / 0.8)
    cache = build(model, dataset, tmp_path / "cache", view=View("speed", 1.25))
    inputs = CachedFeatures(cache, dataset, View("speed", 1.25))
    assert inputs.item(dataset, 3)["duration"] == pytest.approx(2.0 / 1.25)
    with pytest.raises(ValueError, match=r"u9: the view speed:0.5 lasts 32.00 s"):
        view_waveform(_chirp(16.0), View("speed", 0.5), "u9")


def test_a_slowing_view_that_would_pass_30_s_is_refused_before_building():
    views = parse_views(["audio", "speed:0.9"])
    check_speed_fits(views, [3.0, 26.9], ["a", "b"], "train.jsonl")
    with pytest.raises(ValueError) as error:
        check_speed_fits(views, [3.0, 28.0, 29.0], ["a", "b", "c"], "train.jsonl")
    message = str(error.value)
    assert "train.jsonl: cache_views 'speed:0.9' makes 2 utterance(s) longer than" in message
    assert "c, 29.00 s → 32.22 s); use a factor of at least 0.967" in message


def _epoch_views(train: SampledViews, seed: int, epoch: int) -> list[str]:
    sampler = BucketingBatchSampler(
        [len(t) for t in train.tokens], batch_size=2, seed=seed, num_buckets=1, tag_items=True
    )
    sampler.set_epoch(epoch)
    keys = sorted(key for batch in sampler for key in batch)
    return [train[key]["view"] for key in keys]


def test_views_are_drawn_per_seed_epoch_and_index_the_same_in_any_copy(model, dataset, tmp_path):
    views = parse_views(["audio", "mel", "noise:10"])
    caches = [build(model, dataset, tmp_path / "cache", view=view) for view in views]
    one, two = SampledViews(dataset, caches, views), SampledViews(dataset, caches, views)
    by_epoch = [_epoch_views(one, 0, epoch) for epoch in range(4)]
    assert by_epoch == [_epoch_views(two, 0, epoch) for epoch in range(4)]
    assert len({tuple(v) for v in by_epoch}) > 1  # another epoch, other views
    assert len({name for v in by_epoch for name in v}) == 3
    item = one[(2, 0, 1)]
    view = views[one.view_of(2, 0, 1)]
    assert item["view"] == view.name
    torch.testing.assert_close(item["features"], caches[views.index(view)].features(2))
    assert one[2]["view"] == "audio"  # a plain index (evaluation) reads the first view


def test_a_resumed_sampler_gives_the_same_items_views(model, dataset, tmp_path):
    views = parse_views(["audio", "mel"])
    caches = [build(model, dataset, tmp_path / "cache", view=view) for view in views]
    train = SampledViews(dataset, caches, views)
    lengths = [len(t) for t in train.tokens]
    sampler = BucketingBatchSampler(lengths, batch_size=1, seed=3, num_buckets=1, tag_items=True)
    sampler.set_epoch(2)
    first = iter(sampler)
    done = [next(first), next(first)]
    state = sampler.state_dict()
    rest = list(first)
    resumed = BucketingBatchSampler(lengths, batch_size=1, seed=0, num_buckets=1, tag_items=True)
    resumed.load_state_dict(state)
    assert list(resumed) == rest and all(key[1:] == (3, 2) for batch in done for key in batch)
    assert [train[k]["view"] for b in rest for k in b] == [
        views[train.view_of(*k)].name for b in rest for k in b
    ]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["noize:10"], "cache_views 'noize:10': use audio, mel, noise:<snr dB> or speed:<factor>"),
        (["mel:2"], "cache_views 'mel:2': use audio, mel, noise:<snr dB> or speed:<factor>"),
        (["noise:loud"], "cache_views 'noise:loud': noise: takes an SNR in dB; use audio"),
        (["speed:0"], "cache_views 'speed:0': speed: takes a factor > 0"),
        (["noise:10", "noise:10.0"], "cache_views names noise:10 more than once"),
        ([], "cache_views is empty"),
    ],
)
def test_view_names_are_checked_with_what_is_accepted(names, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_views(names)


def test_names_are_canonical():
    assert [v.name for v in parse_views(["audio", " mel", "noise:10.0", "speed:1.10"])] == [
        "audio", "mel", "noise:10", "speed:1.1"
    ]  # fmt: skip
    assert View("noise", 10.0).slug == "noise10" and View("speed", 0.9).speed == 0.9


def test_the_data_module_refuses_views_it_cannot_give(manifest, micro, make_trainer):
    from whisper_ft.data.datamodule import WhisperDataModule

    with pytest.raises(ValueError, match="speed views would move packed windows' timestamps"):
        WhisperDataModule(train_manifest=str(manifest), pack_windows=True,
                          cache_views=["audio", "speed:1.1"])  # fmt: skip
    with pytest.raises(ValueError, match="cache_views 'noize:10'"):
        WhisperDataModule(train_manifest=str(manifest), cache_views=["noize:10"])
    data = WhisperDataModule(train_manifest=str(manifest), num_workers=0, feature_cache="off",
                             cache_views=["audio", "mel"])  # fmt: skip
    with pytest.raises(FeatureCacheError, match=r"cache_views \[audio, mel\] needs the encoder"):
        make_trainer(max_steps=1, limit_val_batches=0).fit(micro, data)


def test_an_empty_mel_batch_keeps_its_shape():
    empty = view_mel_batch(torch.zeros((0, N_SAMPLES)), torch.zeros(0, dtype=torch.long), MEL, 80)
    assert empty.shape == (0, 80, N_FRAMES)


@pytest.mark.parametrize(
    "options",
    [{"speechless_share": 0.5}, {"pack_windows": True}],
    ids=["speechless", "pack_windows"],
)
def test_views_apply_to_speechless_clips_and_packed_windows(
    options, manifest, make_trainer, tmp_path
):
    from whisper_ft.data.datamodule import WhisperDataModule
    from whisper_ft.training.module import WhisperFineTuner

    torch.manual_seed(0)
    module = WhisperFineTuner(base_model="random:micro", lr_warmup_steps=0)
    data = WhisperDataModule(train_manifest=str(manifest), batch_size=2, num_workers=0,
                             feature_cache=str(tmp_path / "features"),
                             cache_views=["audio", "mel", "noise:10"], **options)  # fmt: skip
    trainer = make_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(module, data)
    train = data.datasets["train"]
    assert isinstance(train, SampledViews) and trainer.train_dataloader.batch_sampler.tag_items
    n = len(train)
    for view, cache in zip(train.views, (p.inputs.cache for p in train.parts), strict=True):
        name = "train" if view == AUDIO else f"train-{view.slug}"
        assert cache.complete and len(cache) == n and cache.path.name.rsplit("-", 1)[0] == name
    items = [train[(i, 0, epoch)] for i in range(n) for epoch in range(20)]
    assert {item["view"] for item in items} == {"audio", "mel", "noise:10"}
    assert [item["view"] for item in items] == [
        train.views[train.view_of(i, 0, epoch)].name for i in range(n) for epoch in range(20)
    ]
    windows = train.parts[0]
    if options.get("pack_windows"):  # the tag reaches the windows: their choices per epoch
        assert isinstance(windows, WindowDataset)
        probs = windows.timestamp_prob, windows.prompt_prob
        expected = [
            windows.target_tokens(i, *window_choices(0, epoch, i, *probs))
            for i in range(n)
            for epoch in range(20)
        ]
        assert [(item["tokens"], item["n_prompt"]) for item in items] == expected
        assert len({tuple(item["tokens"]) for item in items[:20]}) == 2  # epochs differ
        assert train[0]["tokens"] == windows.target_tokens(0, *window_choices(0, 0, 0, *probs))[0]
