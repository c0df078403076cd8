"""The transcription engine: a model loaded once, and audio files turned into transcripts.

    transcriber = Transcriber("jvs_base.ckpt")                      # loaded once
    inputs = collect_inputs(["a.wav", "recordings/", "test.jsonl"])  # in order, ids unique
    for transcript in iter_transcripts(transcriber, inputs, batch_size=8):
        print(transcript.id, transcript.text)

Owns `Transcriber` (shared by `transcribe` and `serve`), the inputs (`AudioInput`,
`collect_inputs`: files, folders, manifests), what each becomes (`Transcript`) and
`iter_transcripts`. Files of up to 30 s are decoded `batch_size` at a time as evaluation
decodes them (greedy, no timestamps, `decoding.decode_guarded`) while a thread reads the next
batch. A longer file, and with `timestamps=True` every file, goes through `whisper.transcribe`
on its own: Whisper's long-form loop (30-s windows, each prompted with the text before it,
temperature fallback), which also gives the segments' times for SRT when the model still
predicts timestamp tokens. Writing the outputs and the run are `inference/transcribe.py`'s; the
command is `cli/transcription.py`'s.
"""

import codecs
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import whisper
from tqdm import tqdm
from whisper.audio import N_SAMPLES, SAMPLE_RATE
from whisper.model import Whisper
from whisper.tokenizer import get_tokenizer

from whisper_ft.audio import AUDIO_SUFFIXES, AudioError, load_audio, window_mel
from whisper_ft.decoding import (
    NO_SPEECH_RULE,
    DecodingSettings,
    LoopGuard,
    budgets_for,
    decode_guarded,
    decoding_options,
)
from whisper_ft.manifest import ManifestError, path_ids, read_manifest
from whisper_ft.models.loading import (
    decoding_settings,
    dense_alignment_heads,
    load_base_model,
    model_from_checkpoint,
)
from whisper_ft.text import to_kana

BATCH_SIZE = 8  # files of up to 30 s decoded together, unless told otherwise


def load_for_transcription(
    model_spec: str, device: torch.device
) -> tuple[Whisper, DecodingSettings]:
    """The model in eval mode, and how it decodes: the settings stored with a `.ckpt` or an
    export of one (`models.loading.decoding_settings`), else `DecodingSettings()` (ja, transcribe).
    A checkpoint is read once."""
    if Path(model_spec).suffix == ".ckpt":
        model, settings = model_from_checkpoint(model_spec)
        return dense_alignment_heads(model).to(device).eval(), settings
    settings = decoding_settings(model_spec) or DecodingSettings()
    return load_base_model(model_spec, device=device).eval(), settings


class Transcriber:
    """A model loaded once that decodes batches of waveforms as evaluation does: greedy,
    no timestamps, fp16 on CUDA, with the language, task and katakana constraint the model
    was fine-tuned with (`settings`) unless `language` or `task` say otherwise.
    Shared by `transcribe` and `serve`; not thread-safe (one caller at a time)."""

    # Temperatures of `transcribe_long`; None: whisper.transcribe's own fallback schedule.
    long_form_temperature: float | tuple[float, ...] | None = None
    # Files of up to 30 s: whisper.transcribe's checks (`LoopGuard`; None: greedy only). By
    # default its no-speech rule alone (`decoding.NO_SPEECH_RULE`): "" where the model calls the
    # audio no speech and its text is unlikely or holds no word. `options.sample_len` caps
    # every file's budget.
    loop_guard: LoopGuard | None = NO_SPEECH_RULE

    def __init__(
        self,
        model: str,
        language: str | None = None,
        device: str | None = None,
        task: str | None = None,
    ) -> None:
        """model: what `load_base_model` takes (a name, .pt, .ckpt, CTranslate2 or Hugging Face
        folder, random:<size>). language: the language token (None: the model's, else ja).
        device: cuda, cpu, … (None: cuda when available). task: transcribe or translate
        (None: the model's, else transcribe)."""
        start = time.perf_counter()
        self.model_spec = model
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        loaded, stored = load_for_transcription(model, self.device)
        self._use(loaded, stored, language, task)
        self.load_s = time.perf_counter() - start  # seconds the model took to load

    @classmethod
    def from_model(
        cls,
        model: Whisper,
        settings: DecodingSettings | None = None,
        language: str | None = None,
        task: str | None = None,
    ) -> "Transcriber":
        """A transcriber of a model already in memory, on its own device, not loaded again
        (e.g. the one a `WhisperFineTuner` trains; it is put in eval mode). settings: how it
        decodes (`WhisperFineTuner.decoding_settings`; None: `DecodingSettings()`, as for a
        Whisper name); language and task as for `Transcriber`."""
        transcriber = cls.__new__(cls)
        transcriber.model_spec = "(in memory)"
        transcriber.device = next(model.parameters()).device
        transcriber._use(model.eval(), settings or DecodingSettings(), language, task)
        transcriber.load_s = 0.0
        return transcriber

    def _use(
        self, model: Whisper, stored: DecodingSettings, language: str | None, task: str | None
    ) -> None:
        """Decodes with `model`: the settings stored with it, language and task overridden."""
        self.model = model
        self.settings = replace(
            stored, language=language or stored.language, task=task or stored.task
        )
        self.language = self.settings.language
        tokenizer = get_tokenizer(
            self.model.is_multilingual,
            num_languages=self.model.num_languages,
            language=self.language,
            task=self.settings.task,
        )
        self.options = decoding_options(
            self.language,
            self.settings.task,
            self.device,
            suppress_tokens=self.settings.suppress_tokens(tokenizer),
        )

    @torch.inference_mode()
    def __call__(self, waveforms: list[np.ndarray]) -> list[str]:
        """One text per waveform (16-kHz mono float32 as `load_audio` returns it); each is
        padded or trimmed to Whisper's 30-s window, so only a longer one's first 30 s count
        (`transcribe_long` reads all of it)."""
        return [r.text for r in self.decode(waveforms)]

    @torch.inference_mode()
    def decode(self, waveforms: list[np.ndarray]) -> list[whisper.DecodingResult]:
        """`__call__`'s decoding results (text, tokens, avg_logprob, compression_ratio): each
        file decodes up to its own budget (`decoding.decoding_budget` of its duration, as test
        and validate decode), with `loop_guard`'s fallback when set."""
        if not waveforms:
            return []
        mel = window_mel(waveforms, self.model.dims.n_mels, self.device)
        budgets = self.budgets(waveforms)
        return decode_guarded(self.model, mel, self.options, budgets, self.loop_guard)

    def budgets(self, waveforms: list[np.ndarray]) -> list[int]:
        """Tokens each waveform may decode to: from its duration, capped by `options.sample_len`."""
        durations = [min(len(w), N_SAMPLES) / SAMPLE_RATE for w in waveforms]
        return budgets_for(durations, self.model.dims.n_text_ctx, cap=self.options.sample_len)

    def kana(self, text: str) -> str | None:
        """OpenJTalk's katakana reading of a transcript (`text.to_kana`) when decoding
        Japanese; None for other languages."""
        return to_kana(text) if self.language == "ja" else None

    @torch.inference_mode()
    def transcribe_long(self, waveform: np.ndarray, timestamps: bool = False) -> dict:
        """`whisper.transcribe` of one waveform of any length, with this transcriber's
        language, fp16 and sample length: 30-s windows in turn, each prompted with the text
        before it, Whisper's temperature fallback (`long_form_temperature`). With `timestamps`
        the model may predict timestamp tokens; `timed_segments` tells whether it did.

        waveform : np.ndarray, shape = (n_samples,), 16-kHz mono float32

        Returns Whisper's result: {"text", "segments": [{"start", "end", "text", "tokens", …}],
        "language"}.
        """
        temperature, suppress = self.long_form_temperature, self.options.suppress_tokens
        result = whisper.transcribe(
            self.model,
            waveform,
            verbose=None,
            language=self.language,
            task=self.options.task,
            fp16=self.options.fp16,
            sample_len=self.options.sample_len,
            # a copy: Whisper extends the list it is given in place
            suppress_tokens=list(suppress) if isinstance(suppress, list) else suppress,
            without_timestamps=not timestamps,
            **({} if temperature is None else {"temperature": temperature}),
        )
        # Whisper decodes each segment's tokens on their own: a timestamp that falls inside a
        # kana's or kanji's bytes gives U+FFFD on both sides of it.
        texts = segment_texts(result["segments"], self.tokenizer())
        for segment, text in zip(result["segments"], texts, strict=True):
            segment["text"] = text
        return result

    def tokenizer(self) -> whisper.tokenizer.Tokenizer:
        """Whisper's tokenizer for this model, language and task."""
        return get_tokenizer(
            self.model.is_multilingual,
            num_languages=self.model.num_languages,
            language=self.language,
            task=self.options.task,
        )

    def timed_segments(self, result: dict) -> list[dict] | None:
        """The segments of a `transcribe_long(…, timestamps=True)` result that have text, as
        {"start", "end", "text"}, or None when the model predicted no time: a model
        fine-tuned on `<|notimestamps|>` targets only gives the timestamp Whisper forces at
        the start of each window, and its segments then span whole 30-s windows."""
        timestamp_begin = self.tokenizer().timestamp_begin
        segments = [
            {"start": s["start"], "end": s["end"], "text": s["text"].strip()}
            for s in result["segments"]
            if s["text"].strip()
        ]
        # A predicted segment is <|start|> text <|end|>: at least two timestamp tokens.
        timed = any(
            sum(token >= timestamp_begin for token in s["tokens"]) >= 2 for s in result["segments"]
        )
        return segments if timed or not segments else None


def segment_texts(segments: list[dict], tokenizer: whisper.tokenizer.Tokenizer) -> list[str]:
    """Each segment's text from its tokens, with no character cut by a timestamp: the bytes
    of a character a segment leaves unfinished open the next segment of the same window
    (same "seek"), and are dropped at a window's end, where Whisper starts the next window
    from that timestamp (so the next window reads the character again).

    segments: whisper.transcribe's, each with "seek" and "tokens" (text and timestamp ids).
    """
    # An incremental decoder keeps a character's unfinished bytes until the next call.
    decoder, texts, seek = codecs.getincrementaldecoder("utf-8")(errors="replace"), [], None
    for segment in segments:
        if segment["seek"] != seek:
            decoder.reset()
            seek = segment["seek"]
        data = tokenizer.encoding.decode_bytes(
            [token for token in segment["tokens"] if token < tokenizer.eot]
        )
        texts.append(decoder.decode(data))
    return texts


@dataclass(frozen=True)
class AudioInput:
    """One audio file to transcribe, as `collect_inputs` found it."""

    path: str  # the file: as given, under the folder given, or resolved from the manifest
    id: str  # the manifest line's id, else made from the path (`manifest.path_ids`); unique
    where: str  # where it was named: the argument as given, or "manifest:line"
    reference: str | None = None  # the manifest line's text (None: not from a manifest)


@dataclass
class Transcript:
    """What one input became."""

    id: str  # AudioInput.id
    path: str  # AudioInput.path
    text: str  # the transcript ("" when skipped)
    duration_s: float | None = None  # seconds of audio read (None: skipped)
    kana: str | None = None  # katakana reading of `text` (`text.to_kana`); Japanese only
    reference: str | None = None  # AudioInput.reference
    error: str | None = None  # why the file was skipped (None: transcribed)
    segments: list[dict] | None = None  # {start, end, text} with `timestamps`, if the model timed


def collect_inputs(inputs: list[str]) -> list[AudioInput]:
    """The audio files named by `inputs`, in order: an audio file as it is, a folder's audio
    files (`audio.AUDIO_SUFFIXES`, searched recursively, sorted, hidden ones left out) and a
    `.jsonl` manifest's lines (paths relative to its folder; the line's text kept as the
    reference). Ids are a manifest's own, else made from the paths; a repeated id gets -2, -3.

    Raises AudioError naming every path that does not exist or is a folder without audio, and
    ManifestError for a manifest that cannot be read or has no lines.
    """
    found: list[AudioInput | str] = []  # str: the path of an audio file whose id is made below
    problems = []
    for arg in inputs:
        path = Path(arg)
        if path.suffix == ".jsonl":
            found += _manifest_inputs(path)
        elif path.is_dir():
            files = _audio_files(path)
            if not files:
                problems.append(
                    f"{arg}: a folder without audio files ({', '.join(AUDIO_SUFFIXES)})"
                )
            found += [str(f) for f in files]
        elif path.is_file():
            found.append(arg)
        else:
            problems.append(f"{arg}: no such file or folder")
    if problems:
        raise AudioError(
            "; ".join(problems) + ". Give audio files, folders of them or .jsonl manifests."
        )
    # One id per distinct file: a file named twice gets -2 below, not a longer path id.
    files = list(dict.fromkeys(Path(f).absolute() for f in found if isinstance(f, str)))
    made_ids = dict(zip(files, path_ids(files), strict=True))
    inputs_found = [
        f if isinstance(f, AudioInput) else AudioInput(f, made_ids[Path(f).absolute()], f)
        for f in found
    ]
    return _unique_ids(inputs_found)


def _manifest_inputs(manifest: Path) -> list[AudioInput]:
    utterances = read_manifest(manifest)
    if not utterances:
        raise ManifestError(f"{manifest}: no lines to transcribe.")
    return [
        AudioInput(str(u.audio_path(manifest.parent)), u.id, f"{manifest}:{u.line}", u.text)
        for u in utterances
    ]


def _audio_files(folder: Path) -> list[Path]:
    # Hidden files include macOS's `._name.wav` resource forks, which are not audio.
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in AUDIO_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    )


def _unique_ids(inputs: list[AudioInput]) -> list[AudioInput]:
    seen: set[str] = set()
    unique = []
    for item in inputs:
        new_id, n = item.id, 1
        while new_id in seen:
            n += 1
            new_id = f"{item.id}-{n}"
        seen.add(new_id)
        unique.append(replace(item, id=new_id))
    return unique


def iter_transcripts(
    transcriber: Transcriber,
    inputs: Sequence[AudioInput],
    batch_size: int = BATCH_SIZE,
    timestamps: bool = False,
) -> Iterator[Transcript]:
    """One Transcript per input, in order. Files of up to 30 s are decoded `batch_size` at a
    time; longer ones, and all with `timestamps`, by `Transcriber.transcribe_long`. A file
    that cannot be read is warned about (stderr) and comes back with its `error`."""
    batches = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
    for batch, audios in _read_ahead(batches):
        yield from _transcribe_batch(transcriber, batch, audios, timestamps)


def _read_batch(batch: Sequence[AudioInput]) -> list[np.ndarray | AudioError]:
    audios: list[np.ndarray | AudioError] = []
    for item in batch:
        try:
            audios.append(load_audio(item.path))
        except AudioError as e:
            audios.append(e)
    return audios


def _read_ahead(
    batches: list[Sequence[AudioInput]],
) -> Iterator[tuple[Sequence[AudioInput], list[np.ndarray | AudioError]]]:
    """Each batch with its audio; a thread reads the next batch while the caller decodes."""
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(_read_batch, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            audios = pending.result()
            if i + 1 < len(batches):
                pending = reader.submit(_read_batch, batches[i + 1])
            yield batch, audios


def _transcribe_batch(
    transcriber: Transcriber,
    batch: Sequence[AudioInput],
    audios: list[np.ndarray | AudioError],
    timestamps: bool,
) -> Iterator[Transcript]:
    batched = [
        i
        for i, audio in enumerate(audios)
        if isinstance(audio, np.ndarray) and len(audio) <= N_SAMPLES and not timestamps
    ]
    texts = dict(zip(batched, transcriber([audios[i] for i in batched]), strict=True))
    for i, (item, audio) in enumerate(zip(batch, audios, strict=True)):
        if isinstance(audio, AudioError):
            where = "" if item.where == item.path else f"{item.where} ({item.id}): "
            _warn(f"{where}{audio} Skipped; the other files go on.")
            yield Transcript(item.id, item.path, "", reference=item.reference, error=str(audio))
            continue
        segments = None
        if i in texts:
            text = texts[i]
        else:
            result = transcriber.transcribe_long(audio, timestamps)
            text = result["text"].strip()
            if timestamps:
                segments = transcriber.timed_segments(result)
                if segments is None:
                    _warn(
                        f"{item.where}: the model predicted no timestamps (fine-tuning on "
                        "<|notimestamps|> targets unlearns them), so it gets no SRT; its text "
                        "is in the other outputs."
                    )
        yield Transcript(
            item.id,
            item.path,
            text,
            duration_s=len(audio) / SAMPLE_RATE,
            kana=transcriber.kana(text),
            reference=item.reference,
            segments=segments,
        )


def _warn(message: str) -> None:
    # Through tqdm, so that the line does not break a progress bar on the terminal.
    tqdm.write(f"warning: {message}", file=sys.stderr)
