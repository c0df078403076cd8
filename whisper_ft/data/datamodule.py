"""`WhisperDataModule`: train/val/test manifests → checked, length-bucketed batches for the
module, and `ModelSide`, the one thing it takes from the model it feeds.

manifest ──check_manifest──▶ usable utterances ──UtteranceDataset──▶ BucketingBatchSampler
(bad lines reported and     (kana, duration    (audio per item,      (length-grouped batches,
 excluded, cached)           filled)            waveform augment)     disjoint per process)
"""

import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from torch.utils.data import DataLoader
from whisper.audio import CHUNK_LENGTH
from whisper.model import Whisper
from whisper.tokenizer import Tokenizer

from whisper_ft.data.augment import SpecAugment, WaveformAugment
from whisper_ft.data.check import (
    CheckResult,
    beyond_decoding,
    beyond_decoding_warning,
    check_manifest,
    write_report,
)
from whisper_ft.data.collate import Collator
from whisper_ft.data.dataset import UtteranceDataset
from whisper_ft.data.feature_cache import (
    FeatureCache,
    FeatureCacheError,
    SampledViews,
    build_feature_cache,
    cached,
    cached_views,
    estimate_cache_bytes,
    human_bytes,
    refuse_with_augmentation,
)
from whisper_ft.data.sampler import BucketingBatchSampler
from whisper_ft.data.speechless import ConcatUtterances, speechless_dataset
from whisper_ft.data.views import AUDIO, View, check_speed_fits, parse_views
from whisper_ft.data.windows import WindowDataset, check_probabilities, windows_of
from whisper_ft.manifest import ManifestError, Target


@dataclass(frozen=True)
class ModelSide:
    """What the data side needs from the model it feeds, handed over once: by `connect`, or
    taken from the Trainer's LightningModule by `ModelSide.of` (the one place that knows the
    module's attributes). The data module reads nothing else of the model."""

    tokenizer: Tokenizer  # tokenises the targets; its EOT pads them
    n_text_ctx: int  # the decoder's context: the data check excludes longer targets
    model: Whisper | None = None  # whose encoder output may be cached; None: never cache
    freeze_encoder: bool = False  # only a frozen encoder's output is worth caching
    spec_augment: SpecAugment = SpecAugment()  # masks make each epoch's features differ
    # The frozen encoder's top blocks that train: the cache then holds the input of the first
    encoder_top_layers: int = 0

    @classmethod
    def of(cls, module: pl.LightningModule) -> "ModelSide":
        """From a `WhisperFineTuner`: its tokenizer, Whisper model, frozen flag, SpecAugment,
        the encoder's top blocks that train."""
        return cls(
            tokenizer=module.tokenizer,
            n_text_ctx=module.model.dims.n_text_ctx,
            model=module.model,
            freeze_encoder=module.hparams.freeze_encoder,
            spec_augment=module.spec_augment,
            encoder_top_layers=module.hparams.get("encoder_top_layers", 0),
        )

    @property
    def cached_block(self) -> int | None:
        """The encoder block whose input the feature cache stores; None: the encoder's output."""
        if not self.encoder_top_layers or self.model is None:
            return None
        return self.model.dims.n_audio_layer - self.encoder_top_layers


SPLITS_OF_STAGE = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
CACHED_SPLITS = ("train", "val")  # read every epoch; test (and validate alone) read once


class WhisperDataModule(pl.LightningDataModule):
    """Train/val/test manifests → checked, length-bucketed, padded batches (schema in
    `whisper_ft.data.collate`).

    At start-up every manifest goes through `check_manifest` (cached by the manifest's hash, so
    a restart does not pay again): bad lines are excluded and reported in one line, the full
    report is written beside the run's logs. The tokenizer and the decoder's context length
    come from the module being trained, so the language and task are set once, on the model.

    Args:
        train_manifest: JSONL manifest to train on (fit).
        val_manifest: JSONL manifest for validation during fit, and for validate.
        test_manifest: JSONL manifest for test.
        batch_size: Utterances per training batch.
        eval_batch_size: Utterances per validation/test batch. Decoding keeps no activations
            for a backward pass, so it fits far more than training does, and each decoding
            step reads every decoder weight once for the whole batch: larger is faster. Lower
            it for large models on small GPUs.
        max_duration_s: Train on batches of at most this many seconds of audio instead of
            batch_size utterances (the encoder still takes 30 s per utterance).
        num_buckets: Length buckets of the batch sampler: utterances of similar token length
            share a batch, so little padding is computed; 1 batches at random.
        num_workers: DataLoader processes that read, resample and augment audio.
        target: Manifest field to train on: kana (katakana from prepare) or text (the
            original orthography); None: what the manifest's lines record, else kana.
        augment: Waveform augmentation of training audio (speed, volume, noise); off by
            default.
        feature_cache: Encoder-feature cache of the train and val manifests: auto (fit only)
            stores the frozen encoder's output once (with the model's encoder_top_layers k,
            the input of its first trained block), under the Trainer's
            default_root_dir/feature_cache, then trains decoder-only steps (and those k
            blocks) from it, when the
            encoder is frozen, no augmentation is on and fit reads the data at least twice
            (else the encoder runs every step); off never; a folder path uses or builds the
            cache there, for fit and validate (an error if it cannot apply).
        pack_windows: Train on packed 30-s windows (`data/windows.py`): consecutive utterances
            of one speaker joined by short silences, with Whisper's timestamp tokens and
            previous-text prompts; val and test keep single utterances. The packing is fixed
            by the seed (`--seed_everything`), and so the feature cache holds each window's
            encoder output once (keyed by the packing). Not with waveform augmentation.
        pack_shortest_s: Packed windows: close each window at a length drawn uniformly from
            [this, 30] s, so training also sees one or two utterances followed by silence (as
            a single clip and a recording's last window are), at a cost per utterance between
            a single utterance's and a full window's; None: every window filled to 30 s.
        timestamp_prob: Packed windows: the chance that a window's target has timestamp
            tokens (else `<|notimestamps|>` and the texts joined), drawn per window and epoch.
        prompt_prob: Packed windows: the chance that the previous window of the same speaker
            is given as a `<|startofprev|>` prompt (not learnt, only read); windows then leave
            room for Whisper's longest prompt.
        speechless_share: Adds this share of the training set again as clips without speech
            (silence, white and pink noise at seeded levels and lengths; `data/speechless.py`)
            whose target is empty: the model learns to stop at once where nothing is said.
            With pack_windows: as many clips (this share of the utterances), a window each.
            0: none.
        no_speech_label: Teach items whose target is empty (the speechless clips, or empty
            lines of a corpus) Whisper's `<|nospeech|>` after SOT, as Whisper was trained,
            instead of the language token (`data/collate.py`): the no-speech probability by
            which whisper.transcribe, faster-whisper and `transcribe` say nothing on silence
            then stays meaningful after fine-tuning. False: the language token, as speech.
        cache_views: Views of each training utterance the feature cache holds
            (`data/views.py`): audio (padded with silence to 30 s, as whisper.decode sees it),
            mel (padded with zeros in the log-mel, as whisper.transcribe and faster-whisper
            feed a clip shorter than 30 s), noise:<snr dB> (pink noise at that SNR, fixed per
            utterance), speed:<factor> (plays factor times faster; its durations, and so
            decoding budgets, divide by it; a slower view must still fit 30 s). Each view is
            one (N, n_audio_ctx, n_audio_state) float16 cache folder: K views cost K encoder
            passes per training utterance to build and K times the disk. Each training item
            reads one view, drawn uniformly from (seed, epoch, index), so a resumed run reads
            the same; val and test read audio only. The default, [audio], is the cache as
            it always was (its folders are reused). Other views need the feature cache (auto
            then builds it whatever the number of passes); speed views not with pack_windows.
    """

    def __init__(
        self,
        train_manifest: str | None = None,
        val_manifest: str | None = None,
        test_manifest: str | None = None,
        batch_size: int = 16,
        eval_batch_size: int = 32,
        max_duration_s: float | None = None,
        num_buckets: int = 10,
        num_workers: int = 2,
        target: Target | None = None,
        augment: WaveformAugment = WaveformAugment(),  # noqa: B008 (frozen: one shared default is safe)
        feature_cache: str | None = "auto",
        pack_windows: bool = False,
        pack_shortest_s: float | None = None,
        timestamp_prob: float = 0.5,
        prompt_prob: float = 0.0,
        speechless_share: float = 0.0,
        cache_views: list[str] = ["audio"],  # noqa: B006 (read, never mutated)
        no_speech_label: bool = True,
    ) -> None:
        super().__init__()
        self.views: list[View] = parse_views(cache_views)
        if pack_windows and any(view.kind == "speed" for view in self.views):
            raise ValueError(
                "cache_views: speed views would move packed windows' timestamps: use audio, mel "
                "or noise views with pack_windows, or --data.pack_windows false"
            )
        check_probabilities(timestamp_prob=timestamp_prob, prompt_prob=prompt_prob)
        if isinstance(augment, dict):  # as stored in a checkpoint's hyperparameters
            augment = WaveformAugment(**augment)
        self.augment = augment or WaveformAugment()
        if pack_windows and self.augment.enabled:
            raise ValueError(
                "pack_windows does not take waveform augmentation yet (speed changes would move "
                "the timestamps): turn one off (--data.augment.* or --data.pack_windows false)"
            )
        if not (math.isfinite(speechless_share) and 0 <= speechless_share <= 1):
            raise ValueError(f"`speechless_share` must be in [0, 1], got {speechless_share}")
        if pack_shortest_s is not None and not 0 <= pack_shortest_s <= CHUNK_LENGTH:
            raise ValueError(
                f"`pack_shortest_s` must be in [0, {CHUNK_LENGTH}] s, got {pack_shortest_s}"
            )
        self.save_hyperparameters(ignore=["augment"])
        # A plain dict: checkpoints stay loadable with torch.load(weights_only=True).
        self.hparams["augment"] = asdict(self.augment)
        self.checks: dict[str, CheckResult] = {}
        self.exclusions: dict[str, dict] = {}  # split → what the check left out (for reports)
        # live audio, cached features, or packed windows (train with pack_windows)
        self.datasets: dict[str, UtteranceDataset | WindowDataset] = {}
        self.collators: dict[str, Collator] = {}
        self._train_sampler_state: dict | None = None  # from a checkpoint, until train_dataloader
        self._model_side: ModelSide | None = None

    def connect(self, model_side: ModelSide) -> None:
        """Declare the model this data feeds (its tokenizer, context, encoder); without it,
        `setup` takes it from the Trainer's LightningModule (`ModelSide.of`)."""
        self._model_side = model_side

    @property
    def model_side(self) -> ModelSide:
        """The connected model side, else the current Trainer's module's (read each time: the
        same data module may feed another module in a later fit or test)."""
        if self._model_side is not None:
            return self._model_side
        return ModelSide.of(self.trainer.lightning_module)

    def _splits(self, stage: str) -> list[str]:
        stage = TrainerFn(stage).value  # Lightning passes an enum that prints as TrainerFn.X
        splits = []
        for split in SPLITS_OF_STAGE.get(stage, ()):
            if self.hparams[f"{split}_manifest"] is not None:
                splits.append(split)
            elif not (split == "val" and stage == "fit"):  # fit without validation is fine
                raise ManifestError(
                    f"{stage} needs --data.{split}_manifest <file.jsonl>; make one with "
                    "`python -m whisper_ft prepare …`."
                )
        return splits

    def _check(self, split: str) -> CheckResult:
        if split not in self.checks:
            side = self.model_side
            self.checks[split] = check_manifest(
                self.hparams[f"{split}_manifest"],
                target=self.hparams.target,
                tokenizer=side.tokenizer,
                n_text_ctx=side.n_text_ctx,
            )
        return self.checks[split]

    def prepare_data(self) -> None:
        # One process per node: fills the check's cache before the others read it in setup.
        for split in self._splits(self.trainer.state.fn):
            self._check(split)

    def setup(self, stage: str) -> None:
        side = self.model_side
        fitting = TrainerFn(stage) == TrainerFn.FITTING
        cache_dir = None
        if TrainerFn(stage) == TrainerFn.VALIDATING:
            cache_dir = self._feature_cache_dir(train=None)
        for split in self._splits(stage):
            if split in self.datasets:
                continue
            result = self._check(split)
            self._report(split, result)
            dataset = UtteranceDataset(
                result.utterances,
                result.manifest,
                side.tokenizer,
                result.target,
                self.augment if split == "train" else None,
            )
            collator = Collator(
                eot=side.tokenizer.eot,
                n_text_ctx=side.n_text_ctx,
                target=result.target,
                no_speech=side.tokenizer.no_speech if self.hparams.no_speech_label else None,
            )
            if split == "train" and self.hparams.pack_windows:
                dataset = self._windows(result, self.hparams.speechless_share)
                collator = collator.with_inputs(dataset.inputs)
            elif split == "train" and self.hparams.speechless_share:
                n = round(self.hparams.speechless_share * len(dataset))
                clips = speechless_dataset(n, side.tokenizer, result.target, seed=_seed() + 1)
                dataset = ConcatUtterances([dataset, clips])
            if split == "train" and fitting:
                cache_dir = self._feature_cache_dir(dataset)
                if self._with_views:
                    dataset, collator = self._views(dataset, collator, cache_dir)
                    self.datasets[split], self.collators[split] = dataset, collator
                    continue
            if cache_dir is not None and split in CACHED_SPLITS:
                cache = self._feature_cache(dataset, cache_dir)
                dataset, collator = cached(dataset, collator, cache)
            self.datasets[split], self.collators[split] = dataset, collator

    @property
    def _with_views(self) -> bool:
        """Whether training reads views other than the one cached "audio" view."""
        return self.views != [AUDIO]

    def _views(
        self, dataset: UtteranceDataset, collator: Collator, cache_dir: Path | None
    ) -> tuple[SampledViews, Collator]:
        """The training set reading one of `cache_views` per item, each view's cache built
        (or reused) in turn."""
        names = ", ".join(view.name for view in self.views)
        if cache_dir is None:
            raise FeatureCacheError(
                f"cache_views [{names}] needs the encoder-feature cache, which is off here: set "
                "--data.feature_cache auto (or a folder), or --data.cache_views [audio]"
            )
        ids = [row_id for row_id, _ in dataset.cache_rows()]  # an utterance's, or a window's
        check_speed_fits(self.views, dataset.durations_s, ids, str(dataset.manifest))
        if self.trainer.is_global_zero:
            size = estimate_cache_bytes(len(dataset), self.model_side.model.dims)
            print(
                f"encoder-feature cache views: {names}: {len(self.views)} encoder passes per "
                f"training utterance, {human_bytes(len(self.views) * size)} in all; each "
                "training item reads one, drawn per (seed, epoch, index)",
                flush=True,
            )
        caches = [self._feature_cache(dataset, cache_dir, view) for view in self.views]
        return cached_views(dataset, collator, caches, self.views)

    def _windows(self, result: CheckResult, speechless_share: float) -> WindowDataset:
        """The training utterances packed into windows, fixed by the seed (the sampler's),
        and `speechless_share` times as many speechless clips as utterances, a window each."""
        side, prompt_prob = self.model_side, self.hparams.prompt_prob
        shortest = self.hparams.pack_shortest_s
        windows = windows_of(
            result.utterances,
            side.tokenizer,
            seed=_seed(),
            n_text_ctx=side.n_text_ctx,
            target=result.target,
            prompt=prompt_prob > 0,
            shortest_s=shortest,
        )
        # as many clips as unpacked training adds: 8 clips (a tenth of 75 windows) left one seed
        # of the adaptation benchmark saying ヲ on silence; 29 (a tenth of 288 utterances) did not
        n_clips = round(speechless_share * len(result.utterances))
        clips = (
            speechless_dataset(n_clips, side.tokenizer, result.target, seed=_seed() + 1)
            if n_clips
            else None
        )
        if self.trainer is None or self.trainer.is_global_zero:
            print(
                f"packed windows: {len(result.utterances)} training utterances in "
                f"{len(windows)} windows of at most 30 s"
                + (f" (each closed at {shortest:g} to 30 s)" if shortest is not None else "")
                + (f", and {n_clips} speechless clips" if n_clips else ""),
                flush=True,
            )
        return WindowDataset(
            result.utterances,
            result.manifest,
            side.tokenizer,
            windows,
            target=result.target,
            n_text_ctx=side.n_text_ctx,
            timestamp_prob=self.hparams.timestamp_prob,
            prompt_prob=prompt_prob,
            seed=_seed(),
            clips=clips,
        )

    def _feature_cache_dir(self, train: UtteranceDataset | None) -> Path | None:
        """Where the encoder-feature cache lives, or None to encode live. `train`: fit's
        training set (auto decides by it); None: validate (only a folder given applies)."""
        side, setting = self.model_side, self.hparams.feature_cache
        frozen = side.freeze_encoder
        if setting in (None, "off") or (setting == "auto" and train is None):
            return None
        if setting == "auto":
            if side.model is None:  # connected without a model: nothing to encode with
                return None
            augmented = self.augment.enabled or side.spec_augment.enabled
            if self._with_views:  # views exist only in the cache: build it, or say why not
                refuse_with_augmentation(self.augment, side.spec_augment, freeze_encoder=frozen)
                return Path(self.trainer.default_root_dir) / "feature_cache"
            # Building costs one encoder pass over the data: it pays from the second pass on.
            if not frozen or augmented:
                return None
            if (passes := self._expected_passes(train)) < 2:
                if self.trainer.is_global_zero:
                    print(
                        f"encoder-feature cache: not built, fit reads the training set "
                        f"{passes:.1f} times (it pays from 2); the encoder runs every step",
                        flush=True,
                    )
                return None
            return Path(self.trainer.default_root_dir) / "feature_cache"
        refuse_with_augmentation(self.augment, side.spec_augment, freeze_encoder=frozen)
        return Path(setting)

    def _expected_passes(self, train: UtteranceDataset) -> float:
        """How many times fit will read the training set, from max_epochs and max_steps."""
        trainer = self.trainer
        passes = trainer.max_epochs if trainer.max_epochs not in (None, -1) else math.inf
        if trainer.max_steps is not None and trainer.max_steps > 0:
            per_step = self.hparams.batch_size
            if self.hparams.max_duration_s is not None:  # utterances of about average length
                per_step = self.hparams.max_duration_s / max(1e-3, np.mean(train.durations_s))
            per_step *= trainer.accumulate_grad_batches * trainer.world_size
            passes = min(passes, trainer.max_steps * per_step / max(1, len(train)))
        return passes

    def _feature_cache(
        self, dataset: UtteranceDataset, cache_dir: Path, view: View = AUDIO
    ) -> FeatureCache:
        """Every process builds (or resumes, or reuses) the cache on its training device, the
        encoder in the dtype this Trainer's precision computes it in (part of the key): the
        first to take the cache's file lock (`feature_cache.build_lock`) computes it, the others
        wait on the lock, which has no time limit (a collective barrier would end the job at
        the process group's timeout during a long build), then find it complete."""
        model, strategy = self.model_side.model, self.trainer.strategy
        cache = build_feature_cache(
            model,
            dataset,
            cache_dir,
            device=strategy.root_device,
            precision=self.trainer.precision,
            batch_size=self.hparams.eval_batch_size,
            num_workers=self.hparams.num_workers,
            progress=self.trainer.is_global_zero,
            view=view,
            input_of_block=self.model_side.cached_block,
        )
        strategy.barrier("whisper_ft.feature_cache")  # all hold the cache: no wait left here
        return cache

    def _report(self, split: str, result: CheckResult) -> None:
        """One line per manifest; the full report of excluded lines beside the run's logs."""
        report = None
        if result.problems:  # the same on every process: the check's result is shared
            # Every process asks: under DDP, Trainer.log_dir is a broadcast from rank 0.
            out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
            if self.trainer.is_global_zero:
                report = write_report(result, out_dir / f"data_check_{split}.tsv").resolve()
        self.exclusions[split] = {
            "excluded_by_data_check": result.n_excluded,
            "data_check_report": None if report is None else str(report),
        }
        if self.trainer.is_global_zero:
            side = self.model_side
            warning = beyond_decoding_warning(
                result.manifest, beyond_decoding(result, side.tokenizer, side.n_text_ctx)
            )
            print(*([warning] if warning else []), result.summary(report), sep="\n", flush=True)
        result.require_usable()

    def _loader(self, split: str) -> DataLoader:
        dataset, train = self.datasets[split], split == "train"
        batch_size = self.hparams.batch_size
        if not train:
            batch_size = self.hparams.eval_batch_size
        by_duration = train and self.hparams.max_duration_s is not None
        # Built here, inside the *_dataloader hook: Lightning records its arguments there and
        # re-creates it with its own DistributedSampler's rank under DDP (see sampler.py).
        batches = BucketingBatchSampler(
            [len(tokens) for tokens in dataset.tokens],
            batch_size=None if by_duration else batch_size,
            max_duration_s=self.hparams.max_duration_s if by_duration else None,
            durations_s=dataset.durations_s,
            shuffle=train,
            seed=_seed(),
            num_buckets=self.hparams.num_buckets,
            # packed windows' choices, views' draws: from each item's (index, seed, epoch)
            tag_items=train and getattr(dataset, "takes_tagged_items", False),
        )
        if train:
            self._resume_sampler(batches)
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=workers,
            collate_fn=self.collators[split],
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
        )

    def _resume_sampler(self, sampler: BucketingBatchSampler) -> None:
        """Loads a checkpoint's sampler state into the training sampler as it is made: Lightning
        draws the first batches (`iter()`) before any later hook could (sampler.py)."""
        state = self._train_sampler_state
        self._train_sampler_state = None  # a later reload starts its epoch from the beginning
        if state is None:
            return
        if state["batches_done"] >= len(sampler) * state["num_replicas"] / sampler.num_replicas:
            # Saved at the epoch's last batch: the next epoch is drawn before set_epoch moves on.
            state = state | {"epoch": state["epoch"] + 1, "batches_done": 0}
        sampler.load_state_dict(state)

    def state_dict(self) -> dict:
        """The training sampler's position (in checkpoints, for a mid-epoch resume): the
        batches the training loop finished, not those DataLoader workers drew ahead."""
        # The DataLoader in use: under DDP Lightning re-created it, with its own sampler.
        loader = None if self.trainer is None else self.trainer.train_dataloader
        sampler = getattr(loader, "batch_sampler", None)
        if not isinstance(sampler, BucketingBatchSampler):
            return {}
        state = sampler.state_dict()
        state["batches_done"] = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"train_sampler": state}

    def load_state_dict(self, state_dict: dict) -> None:
        self._train_sampler_state = state_dict.get("train_sampler")
        if self._train_sampler_state is not None:
            # Lightning judges a plain DataLoader "not resumable" and warns on a mid-epoch
            # resume; the sampler state restored here makes the data order continue exactly.
            # Lightning warns later, at the epoch's start, out of any block this method could
            # wrap; the filter matches only that warning of the one Lightning module.
            warnings.filterwarnings(
                "ignore",
                message=r"You're resuming from a checkpoint that",
                category=PossibleUserWarning,
                module=r"pytorch_lightning\.loops\.training_epoch_loop",
            )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val") if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


def _seed() -> int:
    """seed_everything's seed (CLI: --seed_everything), 0 without one."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))
