"""The same Whisper in three runtimes on the CPU: real-time factor and kana CER, one run.

    nice -n 15 python benchmarks/runtimes.py --model base --json /tmp/runtimes.json

Runtimes (each greedy, no timestamps, language ja, temperature 0.0 without fallback, the same
suppression lists; see tests/models/test_export.py for why these options make them agree):

    openai-whisper   this project's transcribe path (`transcribe.Transcriber`: batches of
                     --batch-size waveforms padded to 30 s, `whisper.decode`), float32
    faster-whisper   `WhisperModel(<export --format ct2>).transcribe(…, beam_size=1)` one file at
                     a time, as users call it; float32 and int8 exports (compute_type alike)
    transformers     `WhisperForConditionalGeneration(<export --format hf>).generate` on
                     `WhisperProcessor` features, batches of --batch-size, float32

and each runtime's default call, only the language given (what users run first; its window,
timestamps, beam and fallback are the runtime's own): `whisper.transcribe`, faster-whisper's
`transcribe` (beam 5), transformers' `pipeline("automatic-speech-recognition")`. *same*: texts
equal to this project's own decoding (the openai-whisper row, what `test` scores).

Audio: the test split (then val, if short) of `prepare_synthetic` (OpenJTalk voices and
sentences never trained on by a model fine-tuned on its train split), the first --utterances.
RTF = decoding wall time (features included, model load and export excluded) / audio seconds.
Kana CER: each hypothesis read into katakana by OpenJTalk (`Transcriber.kana`), scored against
the manifest's kana (`metrics.score`), edits summed over utterances / reference characters.
Every runtime uses --threads CPU threads (torch and CTranslate2 alike).

Writes --json and appends one row per runtime to --results (benchmarks/RESULTS.md).
"""

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_table import insert_rows  # noqa: E402 (benchmarks/, the script's own folder)

from whisper_ft import (
    Transcriber,  # noqa: E402
    export_model,  # noqa: E402
    load_audio,  # noqa: E402
    prepare_synthetic,  # noqa: E402
    read_manifest,  # noqa: E402
    score,  # noqa: E402
    to_kana,  # noqa: E402
)
from whisper_ft.evaluation.metrics import has_loop  # noqa: E402

SAMPLE_RATE = 16000
N_SAMPLES = 30 * SAMPLE_RATE  # Whisper's window
PROMPT_LANGUAGE = "ja"


def test_utterances(
    corpus_dir: Path, n: int, manifest: str | None = None
) -> list[tuple[np.ndarray, str]]:
    """(waveform, reference kana) of the first `n` utterances of `manifest`, or else of the
    synthetic corpus's test split, then val."""
    if manifest is None:
        manifests = prepare_synthetic(corpus_dir, n_speakers=3)
        paths = [manifests["test"], manifests["val"]]
    else:
        paths = [Path(manifest)]
    utterances = []
    for path in paths:
        for utterance in read_manifest(path):
            audio_path = Path(utterance.audio)
            if not audio_path.is_absolute():
                audio_path = path.parent / audio_path
            utterances.append((load_audio(audio_path), utterance.kana))
    return utterances[:n]


def run_openai(spec: str, waves: list[np.ndarray], batch_size: int) -> tuple[list[str], float]:
    start = time.perf_counter()
    transcriber = Transcriber(spec, language=PROMPT_LANGUAGE, device="cpu")
    load_s = time.perf_counter() - start
    texts = []
    for i in range(0, len(waves), batch_size):
        texts += transcriber(waves[i : i + batch_size])
    return texts, load_s


def run_faster_whisper(folder: Path, compute_type: str, waves, threads: int, pad: bool = False):
    """`pad`: each waveform padded with silence to 30 s first, so that faster-whisper's log-mel
    is that of the window whisper.decode and training see (its own pads the log-mel with zeros)."""
    from faster_whisper import WhisperModel

    start = time.perf_counter()
    model = WhisperModel(str(folder), device="cpu", compute_type=compute_type, cpu_threads=threads)
    load_s = time.perf_counter() - start
    texts = []
    for wave in waves:
        if pad:
            wave = np.pad(wave, (0, max(0, N_SAMPLES - len(wave))))
        segments, _ = model.transcribe(
            wave,
            language=PROMPT_LANGUAGE,
            beam_size=1,
            best_of=1,
            temperature=0.0,
            without_timestamps=True,
            condition_on_previous_text=False,
        )
        texts.append("".join(s.text for s in segments).strip())
    return texts, load_s


def run_whisper_transcribe(spec: str, waves) -> tuple[list[str], float]:
    """openai-whisper's default call, `whisper.transcribe(model, audio, language=…)`: its own
    window (the log-mel of the speech padded with zeros), temperature fallback, timestamps."""
    import whisper

    start = time.perf_counter()
    model = Transcriber(spec, language=PROMPT_LANGUAGE, device="cpu").model
    load_s = time.perf_counter() - start
    texts = [
        whisper.transcribe(model, wave, language=PROMPT_LANGUAGE, fp16=False)["text"].strip()
        for wave in waves
    ]
    return texts, load_s


def run_faster_whisper_default(folder: Path, waves, threads: int) -> tuple[list[str], float]:
    """faster-whisper's default call, `WhisperModel(folder).transcribe(audio, language=…)`:
    beam 5, timestamps, temperature fallback, its own zero-padded log-mel."""
    from faster_whisper import WhisperModel

    start = time.perf_counter()
    model = WhisperModel(str(folder), device="cpu", compute_type="default", cpu_threads=threads)
    load_s = time.perf_counter() - start
    texts = []
    for wave in waves:
        segments, _ = model.transcribe(wave, language=PROMPT_LANGUAGE)
        texts.append("".join(s.text for s in segments).strip())
    return texts, load_s


def run_transformers_pipeline(folder: Path, waves) -> tuple[list[str], float]:
    """transformers' default call, `pipeline("automatic-speech-recognition", model=folder)`
    with the language given: WhisperFeatureExtractor pads the audio to 30 s."""
    from transformers import pipeline

    start = time.perf_counter()
    asr = pipeline("automatic-speech-recognition", model=str(folder), device="cpu")
    load_s = time.perf_counter() - start
    texts = [
        asr(
            {"raw": wave.copy(), "sampling_rate": SAMPLE_RATE},
            generate_kwargs={"language": PROMPT_LANGUAGE, "task": "transcribe"},
        )["text"].strip()
        for wave in waves
    ]
    return texts, load_s


def run_transformers(folder: Path, waves, batch_size: int):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    start = time.perf_counter()
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    processor = WhisperProcessor.from_pretrained(folder)
    load_s = time.perf_counter() - start
    texts = []
    for i in range(0, len(waves), batch_size):
        batch = waves[i : i + batch_size]
        features = processor(batch, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.inference_mode():
            tokens = model.generate(
                input_features=features.input_features,
                language=PROMPT_LANGUAGE,
                task="transcribe",
                num_beams=1,
                do_sample=False,
            )
        texts += [t.strip() for t in processor.batch_decode(tokens, skip_special_tokens=True)]
    return texts, load_s


def kana_cer(references: list[str], texts: list[str]) -> float:
    scores = [
        score(ref, to_kana(text), "kana") for ref, text in zip(references, texts, strict=True)
    ]
    return sum(s.kana_errors for s in scores) / max(1, sum(s.kana_chars for s in scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="base", help="anything `export` reads (default base)")
    parser.add_argument(
        "--manifest",
        default=None,
        help="test manifest with kana (default: a synthetic corpus's test split; for a model "
        "fine-tuned on synthetic speech give the test manifest of its own corpus)",
    )
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8, help="openai-whisper, transformers")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--work-dir", default=None, help="corpus and exports (default: temp)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        utterances = test_utterances(work / "corpus", args.utterances, args.manifest)
        waves = [wave for wave, _ in utterances]
        references = [kana for _, kana in utterances]
        audio_s = sum(len(w) for w in waves) / SAMPLE_RATE
        export_s = {}
        for name, fmt, quantization in (
            ("ct2_float32", "ct2", "float32"),
            ("ct2_int8", "ct2", "int8"),
            ("hf", "hf", "float16"),
        ):
            start = time.perf_counter()
            export_model(args.model, work / name, fmt, quantization)
            export_s[name] = round(time.perf_counter() - start, 1)
        runs = {
            "openai-whisper": lambda: run_openai(args.model, waves, args.batch_size),
            "faster-whisper float32": lambda: run_faster_whisper(
                work / "ct2_float32", "float32", waves, args.threads
            ),
            "faster-whisper int8": lambda: run_faster_whisper(
                work / "ct2_int8", "int8", waves, args.threads
            ),
            "faster-whisper float32, audio padded to 30 s": lambda: run_faster_whisper(
                work / "ct2_float32", "float32", waves, args.threads, pad=True
            ),
            "faster-whisper int8, audio padded to 30 s": lambda: run_faster_whisper(
                work / "ct2_int8", "int8", waves, args.threads, pad=True
            ),
            "transformers": lambda: run_transformers(work / "hf", waves, args.batch_size),
            "openai-whisper transcribe (default call)": lambda: run_whisper_transcribe(
                args.model, waves
            ),
            "faster-whisper transcribe (default call)": lambda: run_faster_whisper_default(
                work / "ct2_float32", waves, args.threads
            ),
            "transformers pipeline (default call)": lambda: run_transformers_pipeline(
                work / "hf", waves
            ),
        }
        results = {}
        for name, run in runs.items():
            start = time.perf_counter()
            texts, load_s = run()
            decode_s = time.perf_counter() - start - load_s
            results[name] = {
                "rtf": round(decode_s / audio_s, 3),
                "decode_s": round(decode_s, 1),
                "load_s": round(load_s, 1),
                "kana_cer": round(kana_cer(references, texts), 4),
                "loops": sum(has_loop(text) for text in texts),  # a unit repeated 4+ times
                "texts": texts,
            }
            print(f"{name}: RTF {results[name]['rtf']}, kana CER {results[name]['kana_cer']}")
        reference = results["openai-whisper"]
        for run in results.values():
            run["same_text_as_openai"] = sum(
                a == b for a, b in zip(run["texts"], reference["texts"], strict=True)
            )
            run["speed_vs_openai"] = round(reference["rtf"] / run["rtf"], 2)

    report = {
        "date": datetime.date.today().isoformat(),
        "model": args.model,
        "manifest": args.manifest or "synthetic test+val",
        "utterances": len(waves),
        "audio_s": round(audio_s, 1),
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "export_s": export_s,
        "runtimes": results,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1))
    append_rows(Path(args.results), report)


HEADER = """
# Runtimes: the same model in openai-whisper, faster-whisper and transformers

Rows added by `benchmarks/runtimes.py` (one per runtime and run), e.g.

    python benchmarks/runtimes.py --model run.ckpt --manifest corpus/test.jsonl --threads 2

CPU only, one run, runtimes one after another. Greedy decoding without timestamps in every
runtime (faster-whisper with beam_size=1, temperature 0.0 without fallback) but the *default
call* rows: the runtime as a user calls it first, only the language given:
`whisper.transcribe(model, audio, language="ja")`, faster-whisper's `transcribe(audio,
language="ja")` (beam 5, timestamps, fallback), transformers'
`pipeline("automatic-speech-recognition")` (rows from 2026-12-04 on). RTF = decoding seconds /
audio seconds (model load and export excluded); *× openai*: openai-whisper's RTF over the row's
(above 1: faster). Kana CER: hypotheses read into katakana by OpenJTalk, against the reference
kana, on test utterances never trained on; *same*: utterances whose text equals
openai-whisper's (this project's own decoding, what `test` scores); *(n loops)* after a kana
CER: hypotheses repeating a unit 4 times or more (`metrics.has_loop`, the looping sign `test`
reports; rows before 2026-12-03 lack it). *audio padded to 30 s*: the waveform padded with
silence before faster-whisper sees it, so that its log-mel is that of the window
`whisper.decode` and training see (its own `transcribe` pads the log-mel of the speech with
zeros instead).

| date | model | utts (audio s) | threads | runtime | RTF | × openai | load s | kana CER | same |
| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |
"""


def append_rows(path: Path, report: dict) -> None:
    """One row per runtime, into the runtimes table of `path`."""
    rows = [
        f"| {report['date']} | {report['model']} | {report['utterances']} "
        f"({report['audio_s']}) | {report['threads']} | {name} | {run['rtf']:.3f} | "
        f"{run['speed_vs_openai']:.2f}× | {run['load_s']} | {run['kana_cer']:.3f} "
        f"({run['loops']} loops) | "
        f"{run['same_text_as_openai']} / {report['utterances']} |\n"
        for name, run in report["runtimes"].items()
    ]
    insert_rows(path, "# Runtimes:", HEADER.lstrip("\n"), rows)


if __name__ == "__main__":
    main()
