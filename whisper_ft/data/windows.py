"""Packed training windows: several utterances in one 30-s window, as Whisper was trained on
long recordings cut into 30-s pieces, with timestamp tokens and previous-text prompts.

    windows = pack_windows(durations_s, speakers, n_text_tokens, seed=seed, max_tokens=...)
    dataset = WindowDataset(utterances, manifest, tokenizer, windows, timestamp_prob=0.5)
    collate = Collator(eot=tokenizer.eot, inputs=dataset.inputs)  # WindowAudio

Packing (`pack_windows`, fixed for a seed: the sampler's resumable state stays bit-exact):
each speaker's utterances, in manifest order, fill windows one after another, as in a real
recording; each speaker's last, partly filled window is a leftover, and the leftovers of all
speakers are packed together afterwards (in order of speakers' first appearance). Utterances
are joined by silences drawn uniformly from `gap_s` (0.2–1.0 s: a pause between sentences;
Whisper's own 30-s pieces have pauses of any length) and rounded to 0.02 s, Whisper's
timestamp step; the first utterance starts at 0. A window is at most `max_window_s` seconds
and `max_tokens` decoder tokens (the timestamped form); an utterance beyond either alone gets
a window of its own, so none is dropped.

Targets (`window_tokens`), chosen per item by `window_choices`: a pure function of (seed,
epoch, window index), so a window gets the same target in a resumed run whatever the number of
DataLoader workers and the order it is read in, and may get another in the next epoch. The
seed and epoch come with each index from the training sampler (`BucketingBatchSampler(
tag_items=True)` yields `(index, seed, epoch)`), so every worker, persistent ones too, reads
them from its item and no state is shared; a plain index (validation, tests) takes the
dataset's seed and epoch 0:
- with probability `timestamp_prob`: `<|startoftranscript|><|ja|><|transcribe|>` then
  `<|t_start|> text <|t_end|>` for each utterance (`tokenizer.timestamp_begin + round(t/0.02)`);
- otherwise: `sot_sequence_including_notimestamps` + all texts joined;
- with probability `prompt_prob`, before either: `<|startofprev|>` + the text tokens of the
  previous window of the same speaker, cut from the left to `n_text_ctx // 2 - 1` tokens (as
  Whisper keeps its prompt); the item's `n_prompt` (1 + prompt tokens) tells the collator to
  leave them out of the loss.
"""

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from whisper.audio import CHUNK_LENGTH, SAMPLE_RATE
from whisper.tokenizer import Tokenizer

from whisper_ft.data.dataset import UtteranceDataset, target_texts
from whisper_ft.data.inputs import AudioSamples, read_audio
from whisper_ft.data.sampler import ItemKey, untag
from whisper_ft.manifest import Target, Utterance

TIME_STEP_S = 0.02  # Whisper's timestamp resolution: <|t|> = timestamp_begin + round(t / 0.02)
GAP_S = (0.2, 1.0)  # silence between packed utterances, seconds (uniform)
# The last entry of a target choice's seed, (seed, epoch, index, CHOICE_STREAM): a stream apart
# from packing's (seed, 2), the sampler's (seed, epoch, 0 or 1) and the cache views'
# (seed, epoch, index, 4: `feature_cache.VIEW_STREAM`).
CHOICE_STREAM = 3


@dataclass(frozen=True)
class Window:
    """Utterances packed into one window: dataset indices and their place in it."""

    indices: tuple[int, ...]  # into the utterance list, in the order they are heard
    starts_s: tuple[float, ...]  # where each begins in the window, seconds
    ends_s: tuple[float, ...]  # where each ends (start + its duration), seconds
    speaker: str  # the speaker of every utterance, "" if the window mixes speakers

    @property
    def duration_s(self) -> float:
        """Seconds from the window's start to the end of its last utterance."""
        return self.ends_s[-1]


def check_probabilities(**probabilities: float) -> None:
    """Raises a ValueError naming the first parameter outside [0, 1]."""
    for name, value in probabilities.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


def window_token_budget(n_text_ctx: int, prompt: bool) -> int:
    """Decoder tokens a window's target may take (SOT sequence included, `eot` not): the
    context less the label's `eot`, and less Whisper's longest prompt (`<|startofprev|>` +
    `n_text_ctx // 2 - 1` tokens) when prompts are used."""
    return n_text_ctx - 1 - (n_text_ctx // 2 if prompt else 0)


def pack_windows(
    durations_s: Sequence[float],
    speakers: Sequence[str],
    n_text_tokens: Sequence[int],
    *,
    seed: int,
    max_tokens: int,
    n_sot_tokens: int = 3,
    max_window_s: float = CHUNK_LENGTH,
    shortest_s: float | None = None,
    gap_s: tuple[float, float] = GAP_S,
) -> list[Window]:
    """Packs utterances (durations, speakers, text token counts, in manifest order) into
    windows of at most `max_window_s` seconds and `max_tokens` tokens (`n_sot_tokens` + each
    utterance's text + 2 timestamps). Deterministic for a seed (see the module's docstring).

    `shortest_s` (< `max_window_s`): each window is closed at a length drawn uniformly from
    [shortest_s, max_window_s] instead, so windows hold anything from one utterance followed
    by silence (what a single clip and a recording's last window look like) to a full 30 s.
    None: every window is filled to `max_window_s`."""
    if not len(durations_s) == len(speakers) == len(n_text_tokens):
        raise ValueError("durations_s, speakers and n_text_tokens need one entry per utterance")
    if shortest_s is not None and not 0 <= shortest_s <= max_window_s:
        raise ValueError(
            f"shortest_s must be in [0, {max_window_s}] s (the longest window), got {shortest_s}"
        )
    rng = np.random.default_rng((seed, 2))

    def window_length() -> float:
        """The length at which the next window is closed."""
        if shortest_s is None or shortest_s == max_window_s:
            return max_window_s
        return float(rng.uniform(shortest_s, max_window_s))

    by_speaker: dict[str, list[int]] = {}
    for index, speaker in enumerate(speakers):
        by_speaker.setdefault(speaker, []).append(index)

    def fill(run: list[int]) -> list[list[tuple[int, float]]]:
        """Consecutive utterances of `run` cut into windows of (index, start) pairs."""
        windows: list[list[tuple[int, float]]] = []
        current: list[tuple[int, float]] = []
        end_s, tokens, length_s = 0.0, n_sot_tokens, window_length()
        for index in run:
            gap = round(float(rng.uniform(*gap_s)) / TIME_STEP_S) * TIME_STEP_S
            start = end_s + gap if current else 0.0
            need = n_text_tokens[index] + 2
            if current and (start + durations_s[index] > length_s or tokens + need > max_tokens):
                windows.append(current)
                current, start, tokens, length_s = [], 0.0, n_sot_tokens, window_length()
            current.append((index, start))
            end_s, tokens = start + durations_s[index], tokens + need
        if current:
            windows.append(current)
        return windows

    packed: list[list[tuple[int, float]]] = []
    leftovers: list[int] = []
    for run in by_speaker.values():
        windows = fill(run)
        packed += windows[:-1]
        leftovers += [index for index, _ in windows[-1]]
    packed += fill(leftovers)
    out = []
    for pairs in packed:
        indices = tuple(index for index, _ in pairs)
        starts = tuple(start for _, start in pairs)
        ends = tuple(start + durations_s[index] for index, start in pairs)
        window_speakers = {speakers[index] for index in indices}
        speaker = window_speakers.pop() if len(window_speakers) == 1 else ""
        out.append(Window(indices, starts, ends, speaker))
    return out


def timestamp_token(tokenizer: Tokenizer, t_s: float) -> int:
    """`<|t|>` for a time in the window, seconds (rounded to Whisper's 0.02 s)."""
    return tokenizer.timestamp_begin + round(t_s / TIME_STEP_S)


def window_tokens(
    tokenizer: Tokenizer, window: Window, texts: Sequence[str], timestamps: bool
) -> list[int]:
    """The target of a window (its utterances' `texts`, in order), SOT sequence first: with
    `<|t_start|> text <|t_end|>` per utterance, or without timestamps and the texts joined
    (always without when the texts are empty: a window of a speechless clip)."""
    if not timestamps or not "".join(texts):  # nothing said: no times to give
        return [*tokenizer.sot_sequence_including_notimestamps, *tokenizer.encode("".join(texts))]
    tokens = list(tokenizer.sot_sequence)
    for text, start, end in zip(texts, window.starts_s, window.ends_s, strict=True):
        tokens += [timestamp_token(tokenizer, start), *tokenizer.encode(text)]
        tokens.append(timestamp_token(tokenizer, end))
    return tokens


def window_choices(
    seed: int, epoch: int, index: int, timestamp_prob: float, prompt_prob: float
) -> tuple[bool, bool]:
    """(timestamps, prompt) for window `index` in `epoch`: each True with its probability,
    drawn from a generator seeded by (seed, epoch, index, CHOICE_STREAM) alone."""
    rng = np.random.default_rng((seed, epoch, index, CHOICE_STREAM))
    return bool(rng.random() < timestamp_prob), bool(rng.random() < prompt_prob)


def previous_windows(windows: Sequence[Window]) -> list[int | None]:
    """For each window, the index of the previous window of its speaker (None: the first of
    its speaker, or a window that mixes speakers)."""
    last: dict[str, int] = {}
    previous: list[int | None] = []
    for index, window in enumerate(windows):
        previous.append(last.get(window.speaker) if window.speaker else None)
        if window.speaker:
            last[window.speaker] = index
    return previous


@dataclass
class WindowAudio:
    """Live audio of packed windows: each utterance read (16 kHz mono float32) and laid at its
    start, silence between; batches as `AudioSamples` makes them (zero-padded to 30 s).

    `item` → `{"audio": np.ndarray (n_window_samples,) float32}`; `batch` → `audio`
    (B, n_samples) float32, `audio_lengths` (B,) int64, `durations_s` (B,) float32.
    """

    samples: AudioSamples = field(default_factory=AudioSamples)  # stacks the waveforms

    def item(self, dataset: "WindowDataset", index: int) -> dict:
        window = dataset.windows[index]
        audio = np.zeros(round(window.duration_s * SAMPLE_RATE), np.float32)
        for i, start_s, end_s in zip(window.indices, window.starts_s, window.ends_s, strict=True):
            wave = dataset.utterance_audio(i)
            if isinstance(wave, str):
                return {"error": wave}
            start, end = round(start_s * SAMPLE_RATE), round(end_s * SAMPLE_RATE)
            piece = wave[: end - start]  # the manifest's duration sets the timestamps
            audio[start : start + len(piece)] = piece
        return {"audio": audio}

    def batch(self, items: list[dict]) -> dict[str, torch.Tensor]:
        return self.samples.batch(items)


class WindowDataset(Dataset):
    """Packed windows of checked utterances as items the `Collator` and the
    `BucketingBatchSampler` take unchanged: `tokens` (each window's longest target form, for
    the sampler's lengths) and `durations_s` per window.

    Each item is `{"id": "id1+id2+…", "tokens": list[int], "n_prompt": int (prompt tokens
    before the SOT, 0 without), "text": str (the texts joined), "speaker": str, "audio":
    np.ndarray (n_window_samples,) float32}`, or `{"id", "error"}` when a file cannot be read.
    Indexed by a sampler's `(index, seed, epoch)` tag (the target's choices come from it) or a
    plain index (this dataset's seed, epoch 0).

    `clips` (the speechless clips of `data/speechless.py`, or any dataset of utterances with
    its own input strategy) follow the packed windows, each a window of its own, without
    timestamps or prompt: an empty target, which the collator labels `<|nospeech|>`.
    """

    takes_tagged_items = True  # items depend on (seed, epoch): train with tag_items=True

    def __init__(
        self,
        utterances: list[Utterance],
        manifest: str | Path,
        tokenizer: Tokenizer,
        windows: list[Window],
        *,
        target: Target = "kana",
        n_text_ctx: int = 448,
        timestamp_prob: float = 0.5,
        prompt_prob: float = 0.0,
        seed: int = 0,
        clips: UtteranceDataset | None = None,
    ) -> None:
        check_probabilities(timestamp_prob=timestamp_prob, prompt_prob=prompt_prob)
        self.manifest = Path(manifest)  # relative audio paths start at its folder
        self.n_speech = len(utterances)  # utterances from here on are `clips`' lines
        self.clips = clips
        extra = list(clips.utterances) if clips is not None else []
        utterances = [*utterances, *extra]
        windows = [
            *windows,
            *(
                Window((self.n_speech + j,), (0.0,), (u.duration or 0.0,), "")
                for j, u in enumerate(extra)
            ),
        ]
        self.utterances = utterances
        self.windows = windows
        self.tokenizer = tokenizer
        self.n_text_ctx = n_text_ctx
        self.timestamp_prob, self.prompt_prob = timestamp_prob, prompt_prob
        self.seed = seed  # a plain index's choices' seed (a tag brings its own)
        texts = target_texts(utterances, target, self.manifest)
        self.window_texts = [[texts[i] for i in w.indices] for w in windows]
        self.targets = ["".join(t) for t in self.window_texts]
        self.timestamped = [
            window_tokens(tokenizer, w, t, True)
            for w, t in zip(windows, self.window_texts, strict=True)
        ]
        self.plain = [
            window_tokens(tokenizer, w, t, False)
            for w, t in zip(windows, self.window_texts, strict=True)
        ]
        n_sot = len(tokenizer.sot_sequence_including_notimestamps)
        self.text_tokens = [tokens[n_sot:] for tokens in self.plain]  # what a prompt repeats
        self.previous = previous_windows(windows)
        pairs = zip(self.timestamped, self.plain, strict=True)
        self.tokens = [max(a, b, key=len) for a, b in pairs]  # the sampler's lengths
        self.durations_s = [w.duration_s for w in windows]
        self.ids = ["+".join(utterances[i].id for i in w.indices) for w in windows]
        self.inputs = WindowAudio()

    def __len__(self) -> int:
        return len(self.windows)

    def utterance_audio(self, index: int) -> np.ndarray | str:
        """Utterance `index`'s waveform (16 kHz mono float32) from its file, or from the clips'
        own input strategy; the reason when a file cannot be read any more."""
        if index < self.n_speech or self.clips is None:
            return read_audio(self, index, what="window of ")
        return self.clips.inputs.item(self.clips, index - self.n_speech)["audio"]

    def cache_rows(self) -> list[tuple[str, str]]:
        """(id, audio) of each window for the encoder-feature cache's key: its utterances'
        audio and where each starts, so another packing is another cache."""
        return [
            (self.ids[i], "|".join(
                f"{self.utterances[u].audio}@{start:.2f}"
                for u, start in zip(w.indices, w.starts_s, strict=True)
            ))
            for i, w in enumerate(self.windows)
        ]  # fmt: skip

    def with_inputs(self, inputs) -> "WindowDataset":
        """The same windows and targets, their speech given by `inputs` (the feature cache's
        `CachedFeatures`) instead of made from the utterances' audio."""
        other = copy.copy(self)
        other.inputs = inputs
        return other

    @property
    def augment(self) -> None:
        """Windows take no waveform augmentation (it would move the timestamps)."""
        return None

    def target_tokens(self, index: int, timestamps: bool, prompt: bool) -> tuple[list[int], int]:
        """(tokens, n_prompt) of window `index`: its timestamped or plain target, after the
        previous window's text as a prompt when `prompt` and there is one."""
        tokens = self.timestamped[index] if timestamps else self.plain[index]
        previous = self.previous[index]
        if not prompt or previous is None:
            return tokens, 0
        room = min(self.n_text_ctx // 2 - 1, self.n_text_ctx - 2 - len(tokens))
        text = self.text_tokens[previous][-room:] if room > 0 else []
        return [self.tokenizer.sot_prev, *text, *tokens], 1 + len(text)

    def __getitem__(self, key: ItemKey) -> dict:
        index, seed, epoch = untag(key, self.seed)
        speech = self.inputs.item(self, index)
        if "error" in speech:
            return {"id": self.ids[index], "error": speech["error"]}
        timestamps, prompt = window_choices(
            seed, epoch, index, self.timestamp_prob, self.prompt_prob
        )
        tokens, n_prompt = self.target_tokens(index, timestamps, prompt)
        return {
            "id": self.ids[index],
            **speech,
            "tokens": tokens,
            "n_prompt": n_prompt,
            "text": self.targets[index],
            "speaker": self.windows[index].speaker,
        }


def windows_of(
    utterances: list[Utterance],
    tokenizer: Tokenizer,
    *,
    seed: int,
    n_text_ctx: int,
    target: Target = "kana",
    prompt: bool = False,
    shortest_s: float | None = None,
) -> list[Window]:
    """`pack_windows` over checked utterances: their durations, speakers and targets' token
    counts, within the token budget of `n_text_ctx` (with room for a prompt when `prompt`),
    each window closed at a length drawn from [shortest_s, 30] s when `shortest_s` is given."""
    return pack_windows(
        [u.duration or 0.0 for u in utterances],
        [u.speaker or "" for u in utterances],
        [len(tokenizer.encode(getattr(u, target) or "")) for u in utterances],
        seed=seed,
        max_tokens=window_token_budget(n_text_ctx, prompt),
        n_sot_tokens=len(tokenizer.sot_sequence),
        shortest_s=shortest_s,
    )
