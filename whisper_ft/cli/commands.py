"""The argparse verbs beside LightningCLI's fit/validate/test, except the inference ones
(`transcription.py`): `prepare …`, `check-data`, `cache`, `recipes`, `demo`, `report`,
`export`. Each is a front of one library function: its options come from that function's
signature (`arguments.add_options`), so flags, types and defaults are written once, there.
Errors are raised; `cli.main` turns them into one `error:` line."""

import argparse
import inspect
from collections.abc import Callable

from whisper_ft.cli.arguments import add_options, call, non_negative_int, positive_int
from whisper_ft.corpora.huggingface import prepare_hf
from whisper_ft.corpora.jvs import JVS_SUBSETS, prepare_jvs
from whisper_ft.corpora.lists import prepare_csv, prepare_folder, prepare_tsv
from whisper_ft.corpora.merge import prepare_merge
from whisper_ft.corpora.split import SplitOptions
from whisper_ft.corpora.synthetic import (
    SYNTHETIC_VOICES,
    prepare_long_recordings,
    prepare_synthetic,
)
from whisper_ft.data.check import REASONS, check_data
from whisper_ft.evaluation.report import write_report
from whisper_ft.models.export import export_model

TARGET_HELP = (
    "field to train on, recorded on every line: kana (katakana by OpenJTalk) or text (the "
    "transcript's own orthography)"
)
SPLIT_HELP = {
    "val_speakers": "with --split: speakers for val (default: a seeded ~5%%)",
    "test_speakers": "with --split: speakers for test (default: a seeded ~10%%)",
    "seed": "with --split: seed of the speaker and sentence split",
}


def add_prepare_command(commands: argparse._SubParsersAction) -> None:
    """`prepare jvs|synthetic|long|csv|tsv|folder|hf|merge`: a corpus → manifests."""
    prepare = commands.add_parser(
        "prepare",
        help="make manifests from a corpus (train/val/test disjoint by speaker and sentence), "
        "or merge manifests",
    )
    corpora = prepare.add_subparsers(
        dest="corpus", required=True, metavar="{jvs,synthetic,long,csv,tsv,folder,hf,merge}"
    )

    p = corpora.add_parser("jvs", help="JVS (or any corpus in its folder layout)")
    add_options(
        p,
        prepare_jvs,
        help={
            "root": "the unzipped jvs_ver1 folder",
            "out": "folder for train/val/test.jsonl",
            "subsets": f"subset folders to read (JVS has {', '.join(JVS_SUBSETS)})",
            "val_speakers": "speakers for val (default: seeded ~5%%)",
            "test_speakers": "speakers for test (default: seeded ~10%%)",
            "seed": "seed of the speaker and sentence split",
            "target": TARGET_HELP,
        },
    )
    p.set_defaults(func=runs(prepare_jvs))

    p = corpora.add_parser("synthetic", help="an offline corpus spoken by OpenJTalk")
    add_options(
        p,
        prepare_synthetic,
        help={
            "out": "folder for wav/ and the manifests",
            "n_sentences": "use N sentences (default: all)",
            "n_speakers": f"voices, 3 to {len(SYNTHETIC_VOICES)}",
            "seed": "seed of the sentence split",
            "target": TARGET_HELP,
        },
    )
    p.set_defaults(func=runs(prepare_synthetic))

    p = corpora.add_parser(
        "long",
        help="long-form test recordings (40 s and more): a manifest's utterances joined with "
        "pauses, each sentence's times known",
    )
    add_options(
        p,
        prepare_long_recordings,
        help={
            "out": "folder for long/ and long.jsonl (a `prepare synthetic` folder)",
            "manifest": "utterances to join (default: <out>/test.jsonl)",
            "n_recordings": "recordings to make",
            "sentences_per_recording": "utterances in each (more while it is too short)",
            "pause_s": "silence before each utterance, seconds: low high",
            "min_duration_s": "seconds each recording lasts at least",
            "seed": "seed of the utterance order and pauses",
        },
        flags={"pause_s": "--pause", "min_duration_s": "--min-duration"},
        value_types={"n_recordings": positive_int, "sentences_per_recording": positive_int},
    )
    p.set_defaults(func=runs(prepare_long_recordings))

    p = corpora.add_parser(
        "csv",
        help="a CSV with a header audio,text[,speaker], or deepspeech.pytorch's "
        "audio.wav,transcript.txt lines",
    )
    add_options(
        p,
        prepare_csv,
        help={
            "csv_path": "the CSV file; relative paths in it start from its folder",
            "out": "folder for all.jsonl (or train/val/test.jsonl)",
            "target": TARGET_HELP,
        },
        positional=("csv_path",),
        flags={"csv_path": "csv"},
    )
    add_split_options(p)
    p.set_defaults(func=runs(prepare_csv, split=True))

    p = corpora.add_parser(
        "tsv", help="Common Voice (train/dev/test.tsv and clips/) or ReazonSpeech-style TSVs"
    )
    add_options(
        p,
        prepare_tsv,
        help={
            "path": "a Common Voice language folder (→ train/val/test.jsonl) or one TSV file "
            "(→ <its name>.jsonl): Common Voice's (audio from clips/ beside it) or "
            "ReazonSpeech's header-less audio<TAB>transcript lines (audio relative to the "
            "TSV's folder)",
            "out": "folder for the manifests",
            "target": TARGET_HELP,
        },
        positional=("path",),
    )
    p.set_defaults(func=runs(prepare_tsv))

    p = corpora.add_parser(
        "folder", help="audio files (recursively) with a same-named .txt or .lab beside each"
    )
    add_options(
        p,
        prepare_folder,
        help={
            "root": "the folder; root/<speaker>/… gives each file its speaker",
            "out": "folder for all.jsonl (or train/val/test.jsonl)",
            "target": TARGET_HELP,
        },
        positional=("root",),
    )
    add_split_options(p)
    p.set_defaults(func=runs(prepare_folder, split=True))

    p = corpora.add_parser(
        "hf", help="a Hugging Face dataset: a save_to_disk folder or an audiofolder (datasets)"
    )
    add_options(
        p,
        prepare_hf,
        help={
            "path": "folder written by save_to_disk, or an audiofolder directory",
            "out": "folder for the manifests and audio/",
            "audio_column": "audio column",
            "text_column": "transcript column",
            "speaker_column": "speaker column, e.g. client_id (default: none)",
            "splits": "dataset splits to read (default: all)",
            "target": TARGET_HELP,
        },
        positional=("path",),
    )
    add_split_options(p)
    p.set_defaults(func=runs(prepare_hf, split=True))

    p = corpora.add_parser("merge", help="several manifests → one, filtered by duration")
    add_options(
        p,
        prepare_merge,
        help={
            "manifests": "manifests (.jsonl) to merge, in this order",
            "out": "the merged manifest, a .jsonl file",
            "min_duration_s": "keep lines of at least this many seconds",
            "max_duration_s": "keep lines of at most this many seconds",
            "target": "record one target on every line (kana: fill missing kana); default: "
            "keep lines as they are",
        },
        positional=("manifests",),
        flags={"min_duration_s": "--min-duration", "max_duration_s": "--max-duration"},
    )
    p.set_defaults(func=runs(prepare_merge))


def add_split_options(parser: argparse.ArgumentParser) -> None:
    """`--split` and the `SplitOptions` (speakers, seed) for a corpus without splits."""
    parser.add_argument(
        "--split",
        action="store_true",
        help="write train/val/test.jsonl, disjoint by speaker and sentence, instead of all.jsonl",
    )
    add_options(parser, SplitOptions, help=SPLIT_HELP)


def split_options(args: argparse.Namespace) -> SplitOptions | None:
    """The `SplitOptions` given with `--split`; None without it."""
    if not args.split:
        if "val_speakers" in args or "test_speakers" in args:
            raise ValueError("--val-speakers and --test-speakers need --split.")
        return None
    return call(SplitOptions, args)


def runs(function: Callable, *, split: bool = False) -> Callable[[argparse.Namespace], int]:
    """A command calling `function` with its parsed options (and `split=split_options(…)`);
    exit code 0."""

    def command(args: argparse.Namespace) -> int:
        if split:
            call(function, args, split=split_options(args))
        else:
            call(function, args)
        return 0

    return command


def add_cache_command(commands: argparse._SubParsersAction) -> None:
    """`cache`: store a frozen encoder's output for manifests (`precompute.cache_manifests`)."""
    from whisper_ft.training.precompute import cache_manifests

    p = commands.add_parser(
        "cache",
        help="store a frozen encoder's output for manifests once (encoder-feature cache)",
        description="Runs each manifest through the same data check as training, prints the "
        "cache's size, then stores the encoder output of every usable utterance in a folder "
        "under --out. Resumes where an interrupted run stopped; a finished cache is reused.",
    )
    add_options(
        p,
        cache_manifests,
        help={
            "model": "Whisper name, .pt, .ckpt, CTranslate2 or Hugging Face folder, or "
            "random:<size>",
            "manifests": "JSONL manifests; one cache folder each",
            "out": "folder of caches (give training the same)",
            "batch_size": "utterances per pass",
            "device": "cuda, cpu, … (default: cuda if available)",
            "workers": "DataLoader processes reading audio",
            "dtype": "storage dtype",
            "precision": "the --trainer.precision of the fit that reads the cache (default: the "
            "Trainer's default): the encoder runs in its dtype, which keys the cache",
            "target": "the target training uses (default: the lines' target, else kana): it "
            "decides which lines the data check keeps",
            "rebuild": "start afresh (audio changed in place)",
        },
        flags={"manifests": "--manifest"},
        value_types={"batch_size": positive_int},
    )
    # Exit code 1 when some utterance could not be cached.
    p.set_defaults(func=lambda args: 0 if call(cache_manifests, args) else 1)


def recipes_command(args: argparse.Namespace) -> int:
    from whisper_ft.recipes import copy_recipe, recipe_names, recipe_path, recipe_summary

    if args.copy:
        name, dest = args.copy
        written = copy_recipe(name, dest)
        print(f"wrote {written}; run it with: python -m whisper_ft fit --config {written}")
        return 0
    for name in recipe_names():
        print(f"{name:16} {recipe_summary(name)}")
    print(f"(in {recipe_path(recipe_names()[0]).parent}; `fit --config NAME` runs one)")
    return 0


def add_recipes_command(commands: argparse._SubParsersAction) -> None:
    """Add `recipes`: list the shipped LightningCLI recipes, or copy one out to edit."""
    p = commands.add_parser(
        "recipes",
        help="the shipped fit recipes (fit --config NAME), or --copy NAME DEST to edit one",
        description="Lists the LightningCLI recipes shipped with the package, each with what it "
        "is for; `fit --config NAME` runs one by name. --copy NAME DEST writes it out to edit "
        "(never over an existing file).",
    )
    p.add_argument("--copy", nargs=2, metavar=("NAME", "DEST"), help="recipe name, file or folder")
    p.set_defaults(func=recipes_command)


def add_demo_command(commands: argparse._SubParsersAction) -> None:
    """`demo`: the offline end-to-end job (`demo.run_demo`)."""
    from whisper_ft.recipes.demo import run_demo

    p = commands.add_parser("demo", help="offline end-to-end run: corpus, fit, evaluate, export")
    add_options(
        p,
        run_demo,
        help={
            "out": "folder for corpus and run outputs",
            "max_steps": "training steps (default: 150 decoder steps from pretrained weights, 60 "
            "whole-model steps from random ones)",
            "base_model": "the model to fine-tune: a Whisper name, .pt, CTranslate2 or Hugging "
            "Face folder",
            "long_form_s": "seconds of the long-form recording made of the test sentences, "
            "transcribed before and after fine-tuning (0: none)",
        },
        value_types={"max_steps": positive_int},
    )
    p.set_defaults(func=demo)


def demo(args: argparse.Namespace) -> int:
    from whisper_ft.recipes.demo import run_demo

    call(run_demo, args)
    return 0


def add_check_command(subparsers: argparse._SubParsersAction) -> None:
    """Add `check-data` (`check_data`) to an argparse subparsers object; it sets `func`, a
    callable(args) → exit code."""
    p = subparsers.add_parser(
        "check-data",
        help="check manifests and their audio before training: one line per problem",
        description="Reasons: "
        + "; ".join(f"{reason}: {meaning}" for reason, meaning in REASONS.items()),
    )
    add_options(
        p,
        check_data,
        help={
            "manifests": "JSONL manifests",
            "strict": "exit with 1 when any line is bad",
            "target": "target to check (default: the lines' target, else kana)",
            "workers": "processes (default: every CPU core)",
            "report": "TSV of the problems (line, id, reason, detail); with several manifests a "
            "folder that gets <manifest stem>.tsv for each",
            "recheck": "ignore cached results: reopen every audio file",
        },
        positional=("manifests",),
        flags={"manifests": "manifest"},
        value_types={"workers": positive_int},
    )
    p.set_defaults(func=lambda args: call(check_data, args))


def add_report_command(subparsers: argparse._SubParsersAction) -> None:
    """Add `report` (`write_report`) to an argparse subparsers object; it sets `func`, a
    callable(args) → 0."""
    p = subparsers.add_parser(
        "report",
        help="report.md and plots for a run folder: learning curves, CER by speaker, worst "
        "utterances aligned (test writes it too)",
    )
    add_options(
        p,
        write_report,
        help={
            "run_dir": "run folder of a fit or test (…/lightning_logs/version_N)",
            "worst": "utterances listed with alignments",
        },
        positional=("run_dir",),
        value_types={"worst": non_negative_int},
    )
    p.set_defaults(func=_report_command)


def _report_command(args: argparse.Namespace) -> int:
    call(write_report, args, print_paths=True)
    return 0


LOAD_SNIPPETS = {
    "openai": "import whisper\nmodel = whisper.load_model({out!r})",
    "ct2": "from faster_whisper import WhisperModel\nmodel = WhisperModel({out!r})",
    "hf": "from transformers import WhisperForConditionalGeneration, WhisperProcessor\n"
    "model = WhisperForConditionalGeneration.from_pretrained({out!r})\n"
    "processor = WhisperProcessor.from_pretrained({out!r})",
}


def export_command(args: argparse.Namespace) -> int:
    out = call(export_model, args)
    written = vars(args).get("format", inspect.signature(export_model).parameters["format"].default)
    snippet = LOAD_SNIPPETS[written].format(out=str(out))
    print(f"wrote {out} ({written}); load it with:\n{snippet}")
    return 0


def add_export_command(subparsers: argparse._SubParsersAction) -> None:
    """Add `export` to an argparse subparsers object; its options are `export_model`'s."""
    p = subparsers.add_parser(
        "export",
        help="a .ckpt (or .pt, CTranslate2/Hugging Face folder) → openai .pt, CTranslate2 or HF",
        description="openai: a .pt for whisper.load_model (and this project's transcribe/serve); "
        "ct2: a CTranslate2 folder for faster-whisper; hf: a WhisperForConditionalGeneration "
        "folder for transformers. LoRA adapters are merged first. Everything runs offline.",
    )
    add_options(
        p,
        export_model,
        help={
            "source": "checkpoint written by fit, a .pt, or a CTranslate2/HF folder",
            "out": "the .pt to write (openai), or the folder (ct2, hf)",
            "format": "what to write",
            "quantization": "ct2 weight type (int8 is smaller and faster on CPUs, approximate)",
            "average": "other .ckpt of the same run, averaged with SOURCE (e.g. the last few)",
            "interpolate": "WiSE-FT weight of the fine-tune: (1-a)*base + a*fine-tuned, in [0, 1]",
            "interpolate_base": "the base to interpolate toward (default: the checkpoint's "
            "base_model)",
        },
        positional=("source", "out"),
    )
    p.set_defaults(func=export_command)
