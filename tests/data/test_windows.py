"""Packed 30-s windows: the packing, their timestamped and prompted targets, the collator's
prompt mask, the window audio, and a fit on them."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import whisper
from torch.utils.data import DataLoader
from whisper.audio import CHUNK_LENGTH, SAMPLE_RATE

from whisper_ft.data.augment import WaveformAugment
from whisper_ft.data.collate import IGNORE_INDEX, Collator
from whisper_ft.data.datamodule import WhisperDataModule
from whisper_ft.data.sampler import BucketingBatchSampler
from whisper_ft.data.windows import (
    TIME_STEP_S,
    WindowAudio,
    WindowDataset,
    pack_windows,
    window_choices,
    window_token_budget,
    window_tokens,
)
from whisper_ft.manifest import Utterance

SPEAKERS = ["a"] * 7 + ["b"] * 5 + ["c"] * 2 + ["a"] * 3  # "a" again after others
DURATIONS = [4.0, 7.5, 9.0, 3.2, 12.0, 6.1, 2.0, 8.0, 8.0, 8.0, 5.5, 1.0, 14.0, 9.0, 3.0, 3.0, 29]
N_TOKENS = [20, 40, 50, 10, 60, 30, 8, 45, 45, 45, 25, 5, 70, 40, 12, 12, 150]


def _pack(seed: int = 0, max_tokens: int = 447):
    return pack_windows(DURATIONS, SPEAKERS, N_TOKENS, seed=seed, max_tokens=max_tokens)


@pytest.mark.parametrize("max_tokens", [447, window_token_budget(448, prompt=True), 120])
def test_windows_fit_30_s_and_the_token_budget_and_hold_every_utterance_once(max_tokens):
    windows = _pack(max_tokens=max_tokens)
    indices = sorted(i for w in windows for i in w.indices)
    assert indices == list(range(len(DURATIONS)))
    for w in windows:
        tokens = 3 + sum(N_TOKENS[i] + 2 for i in w.indices)
        if len(w.indices) > 1:  # one utterance alone is never split, whatever its size
            assert w.duration_s <= CHUNK_LENGTH
            assert tokens <= max_tokens
        assert w.starts_s[0] == 0.0
        gaps = np.subtract(w.starts_s[1:], w.ends_s[:-1])
        assert np.all(gaps >= 0.2 - 1e-9) and np.all(gaps <= 1.0 + 1e-9)
    assert window_token_budget(448, prompt=True) == 448 - 1 - 224
    assert any(len(w.indices) > 1 for w in _pack(max_tokens=120))


def test_same_speaker_utterances_stay_together_in_manifest_order():
    windows = _pack()
    by_speaker: dict[str, list[int]] = {}
    for w in windows:
        for i in w.indices:
            by_speaker.setdefault(SPEAKERS[i], []).append(i)
        runs = [SPEAKERS[i] for i in w.indices]
        # each speaker's utterances in a window form one consecutive, ordered run
        starts_of_runs = [s for k, s in enumerate(runs) if k == 0 or runs[k - 1] != s]
        assert len(set(runs)) == len(starts_of_runs)
        assert w.speaker == (runs[0] if len(set(runs)) == 1 else "")
    for speaker, order in by_speaker.items():  # a speaker's windows, in order, replay the manifest
        assert order == [i for i, s in enumerate(SPEAKERS) if s == speaker]
    full = [w for w in windows if w.speaker]
    assert len(full) >= 3  # the full windows are single-speaker


def test_packing_is_the_same_for_a_seed_and_differs_for_another():
    assert _pack(seed=3) == _pack(seed=3)
    assert _pack(seed=3) != _pack(seed=4)


def test_timestamps_are_the_known_starts_and_ends_rounded_to_20_ms(ja_tokenizer):
    windows = pack_windows([2.013, 3.3, 1.251], ["a"] * 3, [5] * 3, seed=1, max_tokens=447)
    (window,) = windows
    texts = ["アイ", "ウエオ", "カキ"]
    tokens = window_tokens(ja_tokenizer, window, texts, timestamps=True)
    assert tokens[:3] == list(ja_tokenizer.sot_sequence)
    begin = ja_tokenizer.timestamp_begin
    stamps = [t - begin for t in tokens if t >= begin]
    expected = []
    for start, end in zip(window.starts_s, window.ends_s, strict=True):
        expected += [round(start / TIME_STEP_S), round(end / TIME_STEP_S)]
    assert stamps == expected
    assert stamps[:2] == [0, round(2.013 / 0.02)] and stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)
    between = [t for t in tokens[3:] if t < begin]
    assert ja_tokenizer.decode(between) == "".join(texts)
    plain = window_tokens(ja_tokenizer, window, texts, timestamps=False)
    assert plain == [
        *ja_tokenizer.sot_sequence_including_notimestamps,
        *ja_tokenizer.encode("".join(texts)),
    ]


def _utterances(tmp_path, n: int = 6, speaker: str = "a") -> list[Utterance]:
    utterances = []
    for i in range(n):
        seconds = 1.0 + 0.25 * i
        wave = np.full(int(seconds * SAMPLE_RATE), 0.1 * (i + 1), np.float32)
        path = tmp_path / f"{speaker}{i}.wav"
        sf.write(path, wave, SAMPLE_RATE)
        utterances.append(
            Utterance(
                id=f"{speaker}{i}",
                audio=str(path),
                text="あ",
                kana="アイウ" * (i + 1),
                duration=seconds,
                speaker=speaker,
            )
        )
    return utterances


def _dataset(tmp_path, ja_tokenizer, max_tokens=40, **kwargs) -> WindowDataset:
    utterances = _utterances(tmp_path)
    windows = pack_windows(
        [u.duration for u in utterances],
        [u.speaker for u in utterances],
        [len(ja_tokenizer.encode(u.kana)) for u in utterances],
        seed=0,
        max_tokens=max_tokens,
    )
    return WindowDataset(utterances, tmp_path / "m.jsonl", ja_tokenizer, windows, **kwargs)


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_timestamp_prob_0_and_1_give_all_plain_or_all_timestamped(tmp_path, ja_tokenizer, prob):
    dataset = _dataset(tmp_path, ja_tokenizer, timestamp_prob=prob)
    notimestamps = ja_tokenizer.sot_sequence_including_notimestamps
    for _ in range(3):  # several draws of each window
        for index in range(len(dataset)):
            tokens = dataset[index]["tokens"]
            has_stamps = any(t >= ja_tokenizer.timestamp_begin for t in tokens)
            assert has_stamps == (prob == 1.0)
            assert (tokens[: len(notimestamps)] == list(notimestamps)) == (prob == 0.0)


def _targets(dataset: WindowDataset, order, seed: int, epoch: int) -> dict:
    items = {i: dataset[(i, seed, epoch)] for i in order}
    return {i: (item["tokens"], item["n_prompt"]) for i, item in items.items()}


def test_a_windows_target_depends_on_seed_epoch_and_index_only(tmp_path, ja_tokenizer):
    kwargs = {"timestamp_prob": 0.5, "prompt_prob": 0.5, "seed": 7}
    one = _dataset(tmp_path, ja_tokenizer, **kwargs)
    other = _dataset(tmp_path, ja_tokenizer, **kwargs)  # built on its own, read backwards
    assert len(one) >= 3
    for seed, epoch in ((7, 0), (7, 3), (2, 3)):  # the tag's seed, not the dataset's
        forward = _targets(one, range(len(one)), seed, epoch)
        assert forward == _targets(other, reversed(range(len(other))), seed, epoch)
        assert forward == _targets(one, [2, 0, 1, *range(len(one))], seed, epoch)  # again
        for i, (tokens, n_prompt) in forward.items():
            choices = window_choices(seed, epoch, i, 0.5, 0.5)
            assert (tokens, n_prompt) == one.target_tokens(i, *choices)
    plain = {i: (one[i]["tokens"], one[i]["n_prompt"]) for i in range(len(one))}
    assert plain == _targets(one, range(len(one)), 7, 0)  # a plain index: its seed, epoch 0
    assert _targets(one, range(len(one)), 7, 3) != plain  # another epoch: other choices


def test_epochs_change_some_choices_and_timestamp_prob_is_the_share_drawn():
    epochs = [[window_choices(0, e, i, 0.3, 0.6) for i in range(4000)] for e in (0, 1)]
    assert epochs[0] != epochs[1]
    assert sum(a != b for a, b in zip(*epochs, strict=True)) > 1000
    assert np.mean([t for t, _ in epochs[0]]) == pytest.approx(0.3, abs=0.03)
    assert np.mean([p for _, p in epochs[0]]) == pytest.approx(0.6, abs=0.03)
    assert window_choices(0, 0, 5, 0.3, 0.6) == epochs[0][5]
    assert epochs[0] != [window_choices(1, 0, i, 0.3, 0.6) for i in range(4000)]  # the seed


def test_persistent_workers_take_each_epochs_choices_from_the_sampler(tmp_path, ja_tokenizer):
    dataset = _dataset(tmp_path, ja_tokenizer, timestamp_prob=0.5, prompt_prob=0.5, seed=0)
    sampler = BucketingBatchSampler(
        [len(t) for t in dataset.tokens], batch_size=1, seed=3, tag_items=True
    )
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=2,
        persistent_workers=True,
        collate_fn=lambda items: items,
    )
    for epoch in (0, 1, 2):
        sampler.set_epoch(epoch)
        got = {dataset.ids.index(it["id"]): (it["tokens"], it["n_prompt"]) for [it] in loader}
        expected = {
            i: dataset.target_tokens(i, *window_choices(3, epoch, i, 0.5, 0.5))
            for i in range(len(dataset))
        }
        assert got == expected


def test_a_resumed_sampler_gives_the_same_windows_targets(tmp_path, ja_tokenizer):
    kwargs = {"timestamp_prob": 0.5, "prompt_prob": 0.5}
    dataset = _dataset(tmp_path, ja_tokenizer, **kwargs)
    lengths = [len(t) for t in dataset.tokens]
    sampler = BucketingBatchSampler(lengths, batch_size=1, seed=3, tag_items=True)
    sampler.set_epoch(2)
    first = iter(sampler)
    next(first)
    state = sampler.state_dict()
    rest = [dataset[key]["tokens"] for batch in first for key in batch]
    resumed = BucketingBatchSampler(lengths, batch_size=1, seed=0, tag_items=True)
    resumed.load_state_dict(state)
    again = _dataset(tmp_path, ja_tokenizer, **kwargs)  # the resumed process builds its own
    assert [again[key]["tokens"] for batch in resumed for key in batch] == rest
    assert len(rest) == len(dataset) - 1


def test_window_audio_lays_each_utterance_at_its_start(tmp_path, ja_tokenizer):
    dataset = _dataset(tmp_path, ja_tokenizer, max_tokens=447)
    window = dataset.windows[0]
    audio = dataset[0]["audio"]
    assert len(audio) == round(window.duration_s * SAMPLE_RATE)
    for i, start, end in zip(window.indices, window.starts_s, window.ends_s, strict=True):
        a, b = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)
        assert np.allclose(audio[a:b], 0.1 * (i + 1), atol=1e-3)
    if len(window.indices) > 1:  # silence between the first two
        gap = audio[
            round(window.ends_s[0] * SAMPLE_RATE) + 1 : round(window.starts_s[1] * SAMPLE_RATE) - 1
        ]
        assert np.all(gap == 0)
    batch = dataset.inputs.batch([dataset[0]])
    assert batch["audio"].shape == (1, CHUNK_LENGTH * SAMPLE_RATE)
    assert batch["durations_s"][0] == pytest.approx(window.duration_s, abs=1e-4)


def test_a_prompt_is_left_out_of_the_loss_and_sot_predicts_the_language(tmp_path, ja_tokenizer):
    dataset = _dataset(tmp_path, ja_tokenizer, timestamp_prob=1.0, prompt_prob=1.0)
    assert len(dataset) >= 2 and dataset.previous[1] == 0
    item = dataset[1]
    n_prompt = item["n_prompt"]
    assert item["tokens"][0] == ja_tokenizer.sot_prev
    assert item["tokens"][1:n_prompt] == dataset.text_tokens[0][-(448 // 2 - 1) :]
    assert item["tokens"][n_prompt] == ja_tokenizer.sot
    batch = Collator(eot=ja_tokenizer.eot, inputs=dataset.inputs)([dataset[0], item])
    labels, inputs = batch["labels"][1], batch["dec_input_ids"][1]
    assert torch.all(labels[:n_prompt] == IGNORE_INDEX)
    assert labels[n_prompt] == ja_tokenizer.sot_sequence[1]  # <|ja|>, after the SOT
    assert inputs[n_prompt] == ja_tokenizer.sot
    assert dataset[0]["n_prompt"] == 0  # the speaker's first window has nothing before it
    assert batch["labels"][0, 0] == ja_tokenizer.sot_sequence[1]


def test_a_long_previous_text_is_cut_from_the_left(tmp_path, ja_tokenizer):
    dataset = _dataset(tmp_path, ja_tokenizer, n_text_ctx=16, prompt_prob=1.0)
    tokens, n_prompt = dataset.target_tokens(1, timestamps=False, prompt=True)
    room = min(16 // 2 - 1, 16 - 2 - len(dataset.plain[1]))
    assert n_prompt - 1 == max(0, min(room, len(dataset.text_tokens[0])))
    if n_prompt > 1:
        assert tokens[1:n_prompt] == dataset.text_tokens[0][-(n_prompt - 1) :]


@pytest.mark.parametrize("name", ["timestamp_prob", "prompt_prob"])
def test_a_probability_outside_0_1_is_refused_by_name(tmp_path, ja_tokenizer, name):
    with pytest.raises(ValueError, match=name):
        _dataset(tmp_path, ja_tokenizer, **{name: 1.5})


def test_a_fit_with_pack_windows_trains_on_windows_and_validates_on_utterances(
    micro, corpus, make_trainer, capsys
):
    paths = {f"{split}_manifest": str(path) for split, path in corpus.items()}
    datamodule = WhisperDataModule(
        **paths, batch_size=2, num_workers=0, pack_windows=True, prompt_prob=0.5
    )
    trainer = make_trainer(max_steps=2, limit_val_batches=1)
    trainer.fit(micro, datamodule)
    assert trainer.global_step == 2
    train, val = datamodule.datasets["train"], datamodule.datasets["val"]
    assert isinstance(train, WindowDataset) and not isinstance(val, WindowDataset)
    n_train = len(train.utterances)
    assert len(train) < n_train  # several utterances per window
    assert sorted(i for w in train.windows for i in w.indices) == list(range(n_train))
    assert max(train.durations_s) <= CHUNK_LENGTH
    # the training sampler tags each index with its seed and epoch (the choices depend on them)
    assert train.takes_tagged_items and trainer.train_dataloader.batch_sampler.tag_items
    out = capsys.readouterr().out
    assert f"{n_train} training utterances in {len(train)} windows" in out
    assert "encoder-feature cache: not built" in out  # 2 steps read the windows once
    batch = datamodule.collators["train"]([train[0], train[1]])
    assert batch["audio"].shape == (2, CHUNK_LENGTH * SAMPLE_RATE)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timestamp_prob": -0.1}, "timestamp_prob"),
        ({"prompt_prob": 2.0}, "prompt_prob"),
        ({"pack_shortest_s": 31.0}, "pack_shortest_s"),
        ({"augment": WaveformAugment(volume_prob=1.0)}, "turn one off"),
    ],
)
def test_the_data_module_refuses_what_packed_windows_cannot_take(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WhisperDataModule(train_manifest="t.jsonl", pack_windows=True, **kwargs)


def test_windows_closed_at_a_drawn_length_hold_one_utterance_to_a_full_window():
    durations, speakers = [3.0] * 60, ["a"] * 60

    def pack(**kwargs):
        return pack_windows(durations, speakers, [10] * 60, seed=0, max_tokens=447, **kwargs)

    full = pack()
    assert pack(shortest_s=CHUNK_LENGTH) == full  # the longest as the shortest: today's packing
    drawn, again = pack(shortest_s=0), pack(shortest_s=0)
    assert drawn == again  # fixed by the seed
    sizes = [len(w.indices) for w in drawn]
    assert min(sizes) == 1 and max(sizes) >= 6  # from one utterance to nearly a full window
    assert max(len(w.indices) for w in full) >= 7 and len(drawn) > len(full)
    assert sorted(i for w in drawn for i in w.indices) == list(range(60))
    assert all(w.duration_s <= CHUNK_LENGTH for w in drawn)
    with pytest.raises(ValueError, match=r"shortest_s must be in \[0, 30"):
        pack(shortest_s=-1)


def test_speechless_clips_follow_the_windows_a_window_each_taught_nospeech(
    micro, corpus, make_trainer, tmp_path, capsys
):
    paths = {f"{split}_manifest": str(path) for split, path in corpus.items()}
    datamodule = WhisperDataModule(
        **paths, batch_size=2, num_workers=0, pack_windows=True, pack_shortest_s=0.0,
        speechless_share=0.5, timestamp_prob=1.0, feature_cache=str(tmp_path),
    )  # fmt: skip
    make_trainer(max_steps=2, limit_val_batches=1).fit(micro, datamodule)
    train = datamodule.datasets["train"]
    assert isinstance(train, WindowDataset)
    n_packed = sum(1 for u in train.utterances if u.speaker != "speechless")
    clips = [w for w in train.windows if train.utterances[w.indices[0]].speaker == "speechless"]
    n_windows = len(train.windows) - len(clips)
    assert len(clips) == round(0.5 * n_packed) > 0  # as many as unpacked training adds
    assert train.windows[n_windows:] == clips  # after every packed window
    assert all(len(w.indices) == 1 and w.indices[0] >= n_packed for w in clips)
    item = train[n_windows]  # the first clip, read from the feature cache
    tokenizer = micro.tokenizer
    assert item["text"] == "" and "features" in item
    assert item["tokens"] == list(tokenizer.sot_sequence_including_notimestamps)  # no times
    labels = datamodule.collators["train"]([item])["labels"][0]
    assert labels[0] == tokenizer.no_speech
    live = train.with_inputs(WindowAudio())
    clip = live[n_windows]["audio"]  # made from its line, as the cache was
    assert len(clip) == round(clips[0].duration_s * SAMPLE_RATE) and np.all(np.isfinite(clip))
    assert f"and {len(clips)} speechless clips" in capsys.readouterr().out


def test_the_feature_cache_holds_each_packed_window_once(micro, corpus, make_trainer, tmp_path):
    paths = {f"{split}_manifest": str(path) for split, path in corpus.items()}
    cache_dir = tmp_path / "cache"
    datamodule = WhisperDataModule(
        **paths, batch_size=2, num_workers=0, pack_windows=True, feature_cache=str(cache_dir)
    )
    make_trainer(max_steps=2, limit_val_batches=1).fit(micro, datamodule)
    train = datamodule.datasets["train"]
    assert isinstance(train, WindowDataset)
    [folder] = [f for f in cache_dir.iterdir() if f.is_dir() and f.name.startswith("train")]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["complete"] and len(meta["key"]["utterances"]) == len(train.windows)
    item = train[0]
    assert "features" in item and "audio" not in item and "n_prompt" in item
    live = train.with_inputs(WindowAudio())[0]["audio"]
    with torch.no_grad():
        expected = micro.encode(torch.from_numpy(whisper.pad_or_trim(live))[None])[0]
    torch.testing.assert_close(item["features"].float(), expected, atol=2e-3, rtol=1e-2)
    batch = datamodule.collators["train"]([train[0], train[1]])
    assert batch["features"].shape[0] == 2 and "audio" not in batch
