"""Long-form: what models do on recordings longer than Whisper's 30-s window.

    python benchmarks/longform.py --models base --recordings 2 --json /tmp/longform.json
    python benchmarks/longform.py --models base checkpoints/jvs_base/best.ckpt \
        --results benchmarks/RESULTS.md

Recordings (`prepare_long_recordings`, `--recordings` of them): the synthetic corpus's test
split (`prepare_synthetic` in `--corpus`, default `<out>/corpus`: the held-out voice and
sentences), or `--manifest`'s utterances (e.g. the adaptation benchmark's test_openjtalk.jsonl,
three held-out voices), joined into recordings of 40 s and more, 12 sentences each (more while
shorter) with pauses of 0.3-1.2 s, every sentence's start and end known. Each model in
`--models` (a Whisper name, a .pt or a .ckpt) transcribes each recording once, as `transcribe
--timestamps` does (`Transcriber.transcribe_long`: whisper.transcribe, 30-s windows, each
prompted with the text before it, temperature fallback), and is scored by `evaluation.longform`:
the whole recording's kana CER, the share of sentence starts a segment start falls within 0.3 s
and 0.5 s of, the median and 90th-percentile start error, dropped sentences, looping and
repeated segments. Beside them the zero-shot pipeline: `--pipeline-model` (default `base`,
pretrained) transcribing the same recordings, its Japanese text read into kana by OpenJTalk
(`UtteranceScore.pipeline_errors`), what a user gets without fine-tuning.

Writes `--json` (per model: the corpus figures, each recording's figures and segments, wall
times) and, with `--results`, one row per model to RESULTS.md's "Long-form" table.
"""

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone, not installed

from results_table import insert_rows  # benchmarks/, the script's own folder

from whisper_ft import (
    Transcriber,
    load_audio,
    prepare_long_recordings,
    prepare_synthetic,
    read_manifest,
)
from whisper_ft.evaluation.longform import (
    LongFormScore,
    combine,
    hypothesis_segments,
    score_recording,
)


def transcribe_recordings(model: str, recordings: list, corpus: Path, device: str) -> dict:
    """`model`'s timed segments of every recording, and their scores and wall times."""
    started = time.perf_counter()
    transcriber = Transcriber(model, language="ja", device=device)
    per_recording, scores, timed_all = [], [], True
    decode_s = 0.0
    for r in recordings:
        audio = load_audio(r.audio_path(corpus))
        start = time.perf_counter()
        result = transcriber.transcribe_long(audio, timestamps=True)
        decode_s += time.perf_counter() - start
        segments, timed = hypothesis_segments(result, transcriber.timed_segments(result))
        timed_all &= timed
        s = score_recording(r.extra["segments"], segments)
        scores.append(s)
        per_recording.append({
            "id": r.id,
            "duration_s": r.duration,
            "timed": timed,
            "scores": s.row(),
            "pipeline_kana_cer": round(s.pipeline_kana_cer, 4),
            "segments": segments,
        })  # fmt: skip
    audio_s = sum(r.duration for r in recordings)
    return {
        "model": model,
        "timed": timed_all,
        "total": combine(scores),
        "recordings": per_recording,
        "load_s": round(transcriber.load_s, 1),
        "decode_s": round(decode_s, 1),
        "real_time_factor": round(decode_s / audio_s, 3),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["base"], help="names, .pt or .ckpt")
    parser.add_argument("--recordings", type=int, default=4, help="long recordings to make")
    parser.add_argument("--sentences-per-recording", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0, help="utterance order and pauses")
    parser.add_argument("--out", type=Path, default=Path("checkpoints/longform"))
    parser.add_argument("--corpus", type=Path, help="a prepare_synthetic folder (default: made)")
    parser.add_argument(
        "--manifest",
        type=Path,
        help="held-out utterances to join, audio relative to --corpus (default: its test.jsonl)",
    )
    parser.add_argument("--pipeline-model", default="base", help="'' for no pipeline row")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--results", type=Path, help="add rows here (RESULTS.md)")
    args = parser.parse_args(argv)
    started = time.time()

    corpus = args.corpus or args.out / "corpus"
    if not (corpus / "test.jsonl").is_file():
        prepare_synthetic(corpus)
    manifest = prepare_long_recordings(
        corpus,
        args.manifest,
        n_recordings=args.recordings,
        sentences_per_recording=args.sentences_per_recording,
        seed=args.seed,
    )
    recordings = read_manifest(manifest)
    models = list(
        dict.fromkeys([*args.models, *([args.pipeline_model] if args.pipeline_model else [])])
    )
    runs = {m: transcribe_recordings(m, recordings, corpus, args.device) for m in models}
    rows = [dict(run_row(runs[m]), reading="as written") for m in args.models]
    if args.pipeline_model:
        rows.append(dict(run_row(runs[args.pipeline_model], pipeline=True), reading="pipeline"))
    result = {
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/longform.py " + shlex.join(argv or sys.argv[1:]),
        "device": args.device,
        "recordings": len(recordings),
        "audio_s": round(sum(r.duration for r in recordings), 1),
        "rows": rows,
        "runs": {
            m: {**run, "total": run["total"].row(), "pipeline": run["total"].row(pipeline=True)}
            for m, run in runs.items()
        },
        "wall_s": round(time.time() - started, 1),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    if args.results:
        insert_rows(args.results, "# Long-form:", HEADER, [table_row(result, r) for r in rows])
    return result


def run_row(run: dict, pipeline: bool = False) -> dict:
    total: LongFormScore = run["total"]
    return {
        "model": run["model"],
        **total.row(pipeline=pipeline),
        "timed": run["timed"],
        "real_time_factor": run["real_time_factor"],
    }


def table_row(result: dict, row: dict) -> str:
    reading = "→ OpenJTalk kana" if row["reading"] == "pipeline" else "as written"
    return (
        f"| {result['date']} | {row['model']} | {reading} | {row['recordings']} "
        f"({result['audio_s']:.0f} s) | **{row['kana_cer']:.3f}** | "
        f"{row['starts_within_0.3s']:.2f} | {row['starts_within_0.5s']:.2f} | "
        f"{row['median_start_error_s']:.2f} | {row['p90_start_error_s']:.2f} | "
        f"{row['dropped']}/{row['sentences']} | {row['looping_segments']} | "
        f"{row['repeated_segments']} | {'yes' if row['timed'] else 'no'} | "
        f"{row['real_time_factor']:.2f} | {result['device']} | `{result['command']}` |\n"
    )


HEADER = """# Long-form: recordings longer than the 30-s window

Rows added by `benchmarks/longform.py` (one per model, and the pipeline); see its docstring.
Recordings of the synthetic test voice and sentences (40 s and more, 12+ sentences, pauses
0.3-1.2 s) through `transcribe --timestamps`'s path (whisper.transcribe). *kana CER*: the whole
recording, summed over recordings; *≤ 0.3 s*, *≤ 0.5 s*: share of sentence starts with a segment
start that close; *median*, *p90*: seconds from a sentence start to the nearest segment start;
*dropped*: sentences no segment overlaps; *loops*: segments with a repeated unit; *repeats*:
segments repeating the one before; *timed*: the model predicted timestamps; *RTF*: decoding
seconds per second of audio.

| date | model | reading | recordings | kana CER | ≤ 0.3 s | ≤ 0.5 s | median s | p90 s \
| dropped | loops | repeats | timed | RTF | device | command |
| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: \
| --- | --- |
"""


if __name__ == "__main__":
    main(sys.argv[1:])
