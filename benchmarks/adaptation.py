"""Is kana fine-tuning worth doing? Zero-shot, zero-shot pipeline and fine-tuned, one corpus.

    python benchmarks/adaptation.py --json /tmp/adaptation.json            # the default recipe
    python benchmarks/adaptation.py --lr 5e-4 --name seed_lr --json …      # one sweep point

On the synthetic corpus (`prepare_synthetic`: OpenJTalk voices, split disjoint by speaker and
sentence) and a real pretrained Whisper (`--base-model`, default `base`: downloaded, else the
packaged weights), it tests on sentences never trained on, spoken by voices never trained on:

    openjtalk   the test sentences read by the corpus's test voice and two more OpenJTalk
                voices at other speeds and pitches (never used for training or selection)
    espeak      the test sentences' kana read by espeak-ng (another synthesiser altogether),
                when `espeak-ng` is installed (Debian: apt-get install espeak-ng)

and reports kana CER (corpus level, `metrics.score`) for:

    zero_shot   the pretrained model scored as a kana model (its kanji count as errors)
    pipeline    the pretrained model's own text read into kana by OpenJTalk: what a user gets
                without fine-tuning, the honest baseline
    fine_tuned  the recipe (WhisperFineTuner + WhisperDataModule, encoder frozen): trained on
                the train split, validated (decoded) every `--val-every` steps on the val
                voice and sentences; the weights of lowest val CER are tested

With espeak-ng installed it also measures retention: the pretrained model's and the recipe's
English WER on `whisper_ft/assets/retention_en.txt` spoken by espeak-ng (`evaluation.retention`),
what the kana fine-tune kept of another language.

Selection (the recipe, its steps) only ever sees the val split. Encoder features of every
split are cached under `--out` once (the encoder is frozen and identical for every run), so
repeated sweep points cost decoder steps and decoding only.

Writes `--json` (`zero_shot`, `pipeline`, `fine_tuned`: {test set: {"kana_cer", "errors",
"chars", "n"}}, the recipe, val CER per validation, wall times) and, with `--results`,
appends a dated row to benchmarks/RESULTS.md.
"""

import argparse
import datetime
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone, not installed

import pytorch_lightning as pl
import soundfile as sf
import torch
from results_table import insert_rows  # benchmarks/, the script's own folder
from whisper.tokenizer import get_tokenizer

from whisper_ft import (
    Utterance,
    WhisperDataModule,
    WhisperFineTuner,
    load_base_model,
    prepare_synthetic,
    read_manifest,
    score,
    write_manifest,
)
from whisper_ft.corpora.espeak import prepare_espeak, speak
from whisper_ft.corpora.synthetic import synthesize
from whisper_ft.data.dataset import UtteranceDataset
from whisper_ft.data.feature_cache import build_feature_cache
from whisper_ft.decoding import (
    NO_SPEECH_RULE,
    LoopGuard,
    budgets_for,
    decode_guarded,
    decoding_options,
    hit_budget,
    speechless_outputs,
)
from whisper_ft.evaluation.metrics import CorpusErrorRates, rates_for_json
from whisper_ft.evaluation.retention import cached_scores, retention_scores
from whisper_ft.models.loading import save_whisper_checkpoint
from whisper_ft.models.merging import interpolate
from whisper_ft.training.module import base_retention_file

# OpenJTalk voices (speed, half-tone) outside prepare's SYNTHETIC_VOICES: test only.
EXTRA_TEST_VOICES = ((0.92, 7.0), (1.12, -10.0))


@dataclass
class Recipe:
    """One fine-tuning configuration (WhisperFineTuner's arguments and the training length)."""

    lr: float = 1e-4  # AdamW peak learning rate
    steps: int = 200  # optimizer steps
    val_every: int = 50  # steps between validations (val CER by decoding)
    batch_size: int = 8  # utterances per step
    lr_warmup_steps: int = 20  # linear warm-up, then linear decay to `steps`
    weight_decay: float = 0.01
    train_parts: str = "decoder"  # WhisperFineTuner.train_parts
    lora_rank: int = 0  # WhisperFineTuner.lora_rank (0: no adapters)
    gradient_clip_val: float = 1.0  # Trainer.gradient_clip_val (norm), as jvs_base; 0: none
    kl_weight: float = 0.0  # WhisperFineTuner.kl_weight: KL to the base decoder (0: off)
    pack_windows: bool = False  # WhisperDataModule.pack_windows: packed 30-s windows
    pack_shortest_s: float = 30.0  # with pack_windows: windows closed at [this, 30] s (30: full)
    timestamp_prob: float = 0.5  # with pack_windows: windows with timestamp tokens
    prompt_prob: float = 0.0  # with pack_windows: windows after a previous-text prompt
    speechless_share: float = 0.0  # WhisperDataModule.speechless_share: silence/noise clips
    no_speech_label: bool = True  # WhisperDataModule.no_speech_label: <|nospeech|> on them
    cache_views: str = "audio"  # WhisperDataModule.cache_views, comma-separated (audio,mel,…)
    encoder_top_layers: int = 0  # WhisperFineTuner.encoder_top_layers: top encoder blocks train
    seed: int = 0


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def respoken(corpus: Path, test: list[Utterance], speaker: str, speak) -> list[Utterance]:
    """The test sentences spoken again by `speak(utterance, path)` as `speaker` (audio under
    `corpus/wav/<speaker>/`, made once), with the original kana as reference."""
    utterances = []
    for u in test:
        audio = Path("wav") / speaker / f"{u.id}.wav"
        if not (corpus / audio).is_file():
            (corpus / audio).parent.mkdir(parents=True, exist_ok=True)
            speak(u, corpus / audio)
        duration = sf.info(corpus / audio).duration
        utterances.append(
            Utterance(
                id=f"{speaker}_{u.id}",
                audio=audio.as_posix(),
                text=u.text,
                kana=u.kana,
                duration=duration,
                speaker=speaker,
                target="kana",
            )
        )
    return utterances


def make_test_sets(corpus: Path, manifests: dict[str, Path]) -> dict[str, Path]:
    """The held-out test manifests: `openjtalk` (test voice + EXTRA_TEST_VOICES) and, when
    espeak-ng is installed, `espeak`; all on the test split's sentences."""
    test = read_manifest(manifests["test"])
    openjtalk = list(test)
    for k, (speed, half_tone) in enumerate(EXTRA_TEST_VOICES, start=1):

        def openjtalk_voice(u, path, speed=speed, half_tone=half_tone):
            synthesize(u.text, path, speed=speed, half_tone=half_tone)

        openjtalk += respoken(corpus, test, f"extra{k}", openjtalk_voice)
    sets = {"openjtalk": write_manifest(corpus / "test_openjtalk.jsonl", openjtalk)}
    if espeak_available():
        espeak = respoken(corpus, test, "espeak", lambda u, path: speak(u.kana, path, voice="ja"))
        sets["espeak"] = write_manifest(corpus / "test_espeak.jsonl", espeak)
    return sets


def decode_set(
    model,
    manifest: Path,
    cache_dir: Path,
    guard: LoopGuard | None = NO_SPEECH_RULE,
    batch_size: int = 32,
) -> list[tuple[str, str, bool]]:
    """(kana reference, raw hypothesis, hit its budget) per utterance of `manifest`, decoded
    greedily from cached encoder features (built on first use), with `guard`'s checks
    (`Transcriber.loop_guard`'s default, Whisper's no-speech rule, as test decodes)."""
    tokenizer = get_tokenizer(True, language="ja", task="transcribe")
    dataset = UtteranceDataset.from_manifest(manifest, tokenizer)
    cache = build_feature_cache(model, dataset, cache_dir, num_workers=0)
    options = decoding_options("ja", "transcribe", torch.device("cpu"))
    triples = []
    for start in range(0, len(dataset), batch_size):
        rows = range(start, min(start + batch_size, len(dataset)))
        features = torch.stack([cache.features(row) for row in rows]).float()
        durations = [dataset.durations_s[row] for row in rows]  # the budget, as test's
        budgets = budgets_for(durations, model.dims.n_text_ctx)
        results = decode_guarded(model, features, options, budgets, guard)
        triples += [
            (dataset.targets[row], r.text, hit_budget(r, budget))
            for row, r, budget in zip(rows, results, budgets, strict=True)
        ]
    return triples


def kana_cer(triples: list[tuple[str, str, bool]], pipeline: bool = False) -> dict:
    """Corpus kana CER of (kana reference, raw hypothesis, hit budget) triples, and the
    looping signs `test` reports (`metrics.CorpusErrorRates`): the share cut at the budget,
    the share with a repeated unit, insertions per reference character. `pipeline`: the
    hypothesis read into kana by OpenJTalk first (`UtteranceScore.pipeline_errors`)."""
    rates = CorpusErrorRates()
    rates.update([score(ref, hyp, "kana", hit_budget=hit) for ref, hyp, hit in triples])
    r = rates_for_json(rates.compute())
    errors, chars = r["pipeline_errors" if pipeline else "kana_errors"], r["kana_chars"]
    return {
        "kana_cer": round(errors / chars, 4),
        "errors": errors,
        "chars": chars,
        "n": len(triples),
        "budget_hit": round(r["budget_hit_rate"], 4),
        "loops": round(r["repetition_rate"], 4),
        "insertions": round(r["insertion_rate"], 4),
    }


def speechless_said(model, guard: LoopGuard | None = NO_SPEECH_RULE) -> dict[str, str]:
    """What `model` says on `decoding.speechless_clips` (silence, white and pink noise), as
    `transcribe` decodes them (Whisper's no-speech rule; None: plain greedy, which always
    says at least one token)."""
    options = decoding_options("ja", "transcribe", torch.device("cpu"))
    return speechless_outputs(model, options, guard)


class BestWeights(pl.Callback):
    """Keeps a copy of the trainable weights at the lowest val_cer seen, and the val history;
    with `keep_last` > 0 also the trainable weights at each of the last `keep_last`
    validations (`snapshots`, oldest first), for checkpoint averaging."""

    def __init__(self, keep_last: int = 0) -> None:
        self.best_cer = float("inf")
        self.best_step = -1
        self.state: dict | None = None
        self.history: list[tuple[int, float]] = []
        self.keep_last = keep_last
        self.snapshots: list[tuple[int, dict]] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        cer = trainer.callback_metrics.get("val_cer")
        if cer is None or trainer.sanity_checking:
            return
        self.history.append((trainer.global_step, round(float(cer), 4)))
        trainable = {n for n, p in pl_module.named_parameters() if p.requires_grad}
        state = {n: t.detach().clone() for n, t in pl_module.state_dict().items() if n in trainable}
        if float(cer) < self.best_cer:
            self.best_cer, self.best_step = float(cer), trainer.global_step
            self.state = state
        if self.keep_last:
            self.snapshots = [*self.snapshots, (trainer.global_step, state)][-self.keep_last :]


def fine_tune(
    recipe: Recipe, base_model: str, manifests: dict, cache_dir: Path, keep_last: int = 0
) -> tuple:
    """Train `recipe`; returns the module with its best-val weights and the BestWeights log
    (with the last `keep_last` validations' weights)."""
    pl.seed_everything(recipe.seed, verbose=False)
    module = WhisperFineTuner(
        base_model=base_model,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        lr_warmup_steps=recipe.lr_warmup_steps,
        train_parts=recipe.train_parts,
        lora_rank=recipe.lora_rank,
        kl_weight=recipe.kl_weight,
        encoder_top_layers=recipe.encoder_top_layers,
    )
    data = WhisperDataModule(
        train_manifest=str(manifests["train"]),
        val_manifest=str(manifests["val"]),
        batch_size=recipe.batch_size,
        eval_batch_size=32,
        num_workers=0,
        feature_cache=str(cache_dir),
        pack_windows=recipe.pack_windows,
        pack_shortest_s=recipe.pack_shortest_s if recipe.pack_shortest_s < 30 else None,
        timestamp_prob=recipe.timestamp_prob,
        prompt_prob=recipe.prompt_prob,
        speechless_share=recipe.speechless_share,
        no_speech_label=recipe.no_speech_label,
        cache_views=recipe.cache_views.split(","),
    )
    best = BestWeights(keep_last)
    trainer = pl.Trainer(
        max_steps=recipe.steps,
        val_check_interval=recipe.val_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[best],
        gradient_clip_val=recipe.gradient_clip_val or None,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(module, data)
    if best.state is not None:
        module.load_state_dict(best.state, strict=False)
    return module.eval(), best


def main(argv: list[str] | None = None) -> dict:
    defaults = Recipe()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("checkpoints/adaptation"))
    parser.add_argument("--base-model", default="base")
    parser.add_argument("--sentences", type=int, default=None, help="None: all 210")
    parser.add_argument("--speakers", type=int, default=6, help="voices: 1 val, 1 test, rest train")
    parser.add_argument("--train-sentences", type=int, default=None, help="first N train sentences")
    parser.add_argument("--name", default="default", help="this recipe's name in the JSON/row")
    parser.add_argument("--skip-baselines", action="store_true", help="no zero-shot decoding")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--results", type=Path, help="append a row here (RESULTS.md)")
    parser.add_argument(
        "--skip-guarded", action="store_true", help="no second decoding with the loop guard"
    )
    parser.add_argument("--save", type=Path, help="write the chosen weights here (Whisper .pt)")
    parser.add_argument(
        "--wise-alphas",
        type=float,
        nargs="*",
        default=[],
        help="also score WiSE-FT (1-a)*base + a*fine-tuned for each a (val, test, retention)",
    )
    parser.add_argument(
        "--average-last",
        type=int,
        default=0,
        help="also score the average of the last N validations' weights (0: off)",
    )
    for field_name, value in asdict(defaults).items():
        kind = (
            (lambda s: s.lower() in ("1", "true", "yes"))
            if isinstance(value, bool)
            else type(value)
        )
        parser.add_argument(f"--{field_name.replace('_', '-')}", type=kind, default=value)
    args = parser.parse_args(argv)
    recipe = Recipe(**{k: getattr(args, k) for k in asdict(defaults)})
    started = time.time()

    corpus = args.out / "corpus"
    manifests = prepare_synthetic(corpus, n_sentences=args.sentences, n_speakers=args.speakers)
    if args.train_sentences:
        train = read_manifest(manifests["train"])
        keep = sorted({u.id.split("_")[1] for u in train})[: args.train_sentences]
        manifests["train"] = write_manifest(
            corpus / f"train_{args.train_sentences}.jsonl",
            [u for u in train if u.id.split("_")[1] in keep],
        )
    test_sets = make_test_sets(corpus, manifests)
    cache_dir = args.out / "feature_cache"
    result: dict = {
        "date": datetime.date.today().isoformat(),
        "base_model": args.base_model,
        "name": args.name,
        "recipe": asdict(recipe),
        "train_utterances": len(read_manifest(manifests["train"])),
        "test_sets": {name: len(read_manifest(path)) for name, path in test_sets.items()},
    }
    guard = LoopGuard()
    retention_set = prepare_espeak(args.out / "retention") if espeak_available() else None
    if retention_set is not None:
        result["retention_base"] = base_retention(args.base_model, retention_set)
    plain = ("", NO_SPEECH_RULE)  # as test and transcribe decode
    guards = (plain,) if args.skip_guarded else (plain, ("_guarded", guard))
    if not args.skip_baselines:
        base = load_base_model(args.base_model).eval()
        for suffix, g in guards:
            triples = {
                name: decode_set(base, path, cache_dir, g) for name, path in test_sets.items()
            }
            result[f"zero_shot{suffix}"] = {name: kana_cer(t) for name, t in triples.items()}
            result[f"pipeline{suffix}"] = {
                name: kana_cer(t, pipeline=True) for name, t in triples.items()
            }
            result[f"examples_zero_shot{suffix}"] = {name: t[:3] for name, t in triples.items()}
        result["speechless_zero_shot"] = speechless_said(base)
        result["speechless_zero_shot_greedy"] = speechless_said(base, None)
        del base
    train_started = time.time()
    module, best = fine_tune(recipe, args.base_model, manifests, cache_dir, args.average_last)
    result["train_s"] = round(time.time() - train_started, 1)
    result["val_cer"] = best.history
    result["best_step"] = best.best_step
    for suffix, g in guards:
        triples = {
            name: decode_set(module.model, path, cache_dir, g) for name, path in test_sets.items()
        }
        result[f"fine_tuned{suffix}"] = {name: kana_cer(t) for name, t in triples.items()}
        result[f"examples_fine_tuned{suffix}"] = {name: t[:3] for name, t in triples.items()}
    result["speechless_fine_tuned"] = speechless_said(module.model)
    result["speechless_fine_tuned_greedy"] = speechless_said(module.model, None)
    if retention_set is not None:
        result["retention_fine_tuned"] = retention_summary(
            retention_scores(module.model.eval(), retention_set, "en")
        )
    if args.save:
        save_whisper_checkpoint(
            module.model.dims, module.model.state_dict(), args.save, module.decoding_settings
        )
        result["saved"] = str(args.save)
    if args.wise_alphas or args.average_last:
        result["variants"] = score_variants(
            module, best, args, manifests, test_sets, cache_dir, retention_set
        )
    result["wall_s"] = round(time.time() - started, 1)
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("examples")}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    if args.results:
        append_row(args.results, result)
    return result


def variant_scores(
    model, manifests: dict, test_sets: dict, cache_dir: Path, retention_set: Path | None
) -> dict:
    """One merged model's val CER (what may choose it), held-out kana CER, English retention
    and what it says on the speechless clips."""
    scores = {"val": kana_cer(decode_set(model, manifests["val"], cache_dir))}
    for name, path in test_sets.items():
        scores[name] = kana_cer(decode_set(model, path, cache_dir))
    if retention_set is not None:
        scores["retention"] = retention_summary(retention_scores(model, retention_set, "en"))
    scores["speechless"] = speechless_said(model)
    scores["speechless_greedy"] = speechless_said(model, None)
    return scores


def score_variants(module, best, args, manifests, test_sets, cache_dir, retention_set) -> dict:
    """The chosen weights merged with the pretrained ones (WiSE-FT, `--wise-alphas`) and the
    average of the last validations' weights (`--average-last`), each scored by
    `variant_scores`; keyed "wise_<alpha>" and "average_last_<n>"."""
    variants = {}
    tuned = {k: v.clone() for k, v in module.model.state_dict().items()}
    base_state = load_base_model(args.base_model).state_dict()
    model = module.model
    for alpha in args.wise_alphas:
        model.load_state_dict(interpolate(base_state, tuned, alpha))
        variants[f"wise_{alpha:g}"] = variant_scores(
            model.eval(), manifests, test_sets, cache_dir, retention_set
        )
    if args.average_last and best.snapshots:
        steps = [step for step, _ in best.snapshots]
        average = {
            name: torch.stack([state[name].float() for _, state in best.snapshots]).mean(0)
            for name in best.snapshots[0][1]
        }
        module.load_state_dict(average, strict=False)
        variants[f"average_last_{len(steps)}"] = variant_scores(
            module.model.eval(), manifests, test_sets, cache_dir, retention_set
        ) | {"steps": steps}
    model.load_state_dict(tuned)
    return variants


def retention_summary(scores) -> dict:
    """What the JSON and the Retention table keep of `evaluation.retention_scores`."""
    return {
        "wer": round(scores.wer, 4),
        "word_errors": scores.word_errors,
        "words": scores.words,
        "budget_hits": scores.budget_hits,
        "loops": scores.repeating,
    }


def base_retention(base_model: str, manifest: Path) -> dict:
    """The pretrained model's English retention scores, kept beside the set as `test` keeps
    them (`evaluation.retention.cached_scores`): decoded once, read back after."""
    scores = cached_scores(
        base_retention_file(manifest, base_model),
        lambda: load_base_model(base_model).eval(),
        manifest,
        "en",
    )
    return retention_summary(scores)


def append_row(path: Path, r: dict) -> None:
    def cer(kind: str, name: str) -> str:
        return f"{r[kind][name]['kana_cer']:.3f}" if name in r.get(kind, {}) else "–"

    recipe = r["recipe"]
    parts = recipe["train_parts"] + (
        f" + LoRA r{recipe['lora_rank']}" if recipe["lora_rank"] else ""
    )
    if recipe.get("encoder_top_layers"):
        parts += f" + top {recipe['encoder_top_layers']} encoder blocks"
    if recipe.get("cache_views", "audio") != "audio":
        parts += f", views {recipe['cache_views']}"
    row = (
        f"| {r['date']} | {r['name']} | {r['base_model']} | {r['train_utterances']} | {parts} | "
        f"{recipe['lr']:g} | {recipe['steps']} ({r['best_step']}) | "
        f"{cer('zero_shot', 'openjtalk')} | {cer('pipeline', 'openjtalk')} | "
        f"**{cer('fine_tuned', 'openjtalk')}** | {cer('zero_shot', 'espeak')} | "
        f"{cer('pipeline', 'espeak')} | **{cer('fine_tuned', 'espeak')}** | {r['wall_s']:.0f} |\n"
    )
    insert_rows(path, "# Adaptation:", ADAPTATION_HEADER, [row])
    if r.get("variants"):
        insert_rows(path, "# Merging:", MERGING_HEADER, variant_rows(r))
    said = r.get("speechless_fine_tuned", {})
    if "retention_fine_tuned" in r:
        before, after = r["retention_base"], r["retention_fine_tuned"]
        ratio = after["wer"] / before["wer"] if before["wer"] else float("inf")
        retention_row = (
            f"| {r['date']} | {r['name']} | {before['wer']:.3f} | {after['wer']:.3f} | "
            f"{ratio:.2f} | {before['budget_hits']} / {after['budget_hits']} | "
            f"{before['loops']} / {after['loops']} | "
            f"{sum(bool(t.strip()) for t in said.values())}/{len(said)} |\n"
        )
        insert_rows(path, "# Retention:", RETENTION_TABLE, [retention_row])
    if "fine_tuned_guarded" not in r:
        return

    def looping(kind: str, name: str) -> str:
        if name not in r.get(kind, {}):
            return "– | – | –"
        s = r[kind][name]
        return f"{s['kana_cer']:.3f} | {s['budget_hit']:.2f} | {s['loops']:.2f}"

    looping_row = (
        f"| {r['date']} | {r['name']} | {recipe['gradient_clip_val'] or '–'} | "
        + " | ".join(
            looping(kind, name)
            for name in ("openjtalk", "espeak")
            for kind in ("fine_tuned", "fine_tuned_guarded")
        )
        + f" | {sum(bool(t.strip()) for t in said.values())}/{len(said)} |\n"
    )
    insert_rows(path, "# Looping:", LOOPING_HEADER, [looping_row])


def variant_rows(r: dict) -> list[str]:
    """MERGING_HEADER's rows: one per `score_variants` entry of result `r`."""
    base_wer = r.get("retention_base", {}).get("wer")
    rows = []
    for name, v in r["variants"].items():

        def cer(key: str, v=v) -> str:
            return f"{v[key]['kana_cer']:.3f}" if key in v else "–"

        if "retention" in v and base_wer:
            wer = f"{v['retention']['wer']:.3f} ({v['retention']['wer'] / base_wer:.2f}×)"
        else:
            wer = "–"
        said = v["speechless"]
        rows.append(
            f"| {r['date']} | {r['name']} | {name.replace('_', ' ')} | {cer('val')} | "
            f"{cer('openjtalk')} | {cer('espeak')} | {wer} | "
            f"{sum(bool(t.strip()) for t in said.values())}/{len(said)} |\n"
        )
    return rows


MERGING_HEADER = """# Merging: WiSE-FT and checkpoint averaging

Rows added by `benchmarks/adaptation.py --wise-alphas … --average-last N`: the recipe's chosen
weights merged with the pretrained ones, θ = (1−α)·θ_base + α·θ_ft (`models.merging.interpolate`,
what `export --interpolate α` writes; α 1 is the fine-tune), and the average of the trainable
weights at the last N validations (`export --average` of the last N checkpoints); val CER (the
only figure a choice may use), held-out kana CER, English WER (× the base's) and how many of the
three speechless clips it said something on (a lone 。 counts; the texts are in the JSON).

| date | recipe | weights | val CER | OpenJTalk | espeak-ng | English WER (× base) \
| said on speechless |
| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |
"""

ADAPTATION_HEADER = """# Adaptation: does kana fine-tuning beat not adapting?

Rows added by `benchmarks/adaptation.py` (one per recipe); see its docstring for the setup.

| date | recipe | base | train utts | trains | lr | steps (best) | zero-shot OpenJTalk \
| pipeline OpenJTalk | fine-tuned OpenJTalk | zero-shot espeak-ng | pipeline espeak-ng \
| fine-tuned espeak-ng | wall s |
| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
"""

RETENTION_TABLE = """# Retention: what the fine-tune kept of English

Rows added by `benchmarks/adaptation.py` when espeak-ng is installed: the recipe's fine-tuned
model and the pretrained base on the English retention set (`whisper_ft/assets/retention_en.txt`,
24 sentences spoken by espeak-ng `-v en`), decoded as plain English (`--language en`, greedy,
each clip's budget from its audio), WER with Whisper's English normaliser; and how many of the
three speechless clips (silence, white and pink noise) the fine-tuned model said something on.

| date | recipe | base WER | fine-tuned WER | ratio | budget hits base / ft | loops base / ft \
| said on speechless |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |
"""

LOOPING_HEADER = """# Looping: the fine-tuned model, greedy vs the loop guard

Rows added by `benchmarks/adaptation.py`: the same fine-tuned weights decoded greedily and with
`decoding.LoopGuard` (whisper.transcribe's fallback), on each held-out test set: kana CER, the
share of hypotheses cut at their decoding budget, the share with a repeated unit; and how many
speechless clips (silence, white and pink noise) it said something on.

| date | recipe | clip | OpenJTalk CER | budget hit | loops | guarded CER | budget hit | loops \
| espeak-ng CER | budget hit | loops | guarded CER | budget hit | loops | said on speechless |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: \
| ---: | ---: |
"""


if __name__ == "__main__":
    main(sys.argv[1:])
