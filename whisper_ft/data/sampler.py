"""Length-bucketed batches: utterances of similar decoder length share a batch.

Whisper's encoder always takes 30 s of audio, so the padding that costs compute is the
decoder's: every row of a batch is as long as its longest token sequence. `BucketingBatchSampler`
sorts utterances into `num_buckets` buckets of similar token length (equal counts, by quantile),
shuffles inside each bucket, cuts the buckets, in order, into batches and shuffles the batches
across buckets, anew every epoch and the same for the same (seed, epoch), as Hugging Face's
`group_by_length` and lhotse's `DynamicBucketingSampler` do.

A batch holds `batch_size` utterances or as many as fit in `max_duration_s` seconds of audio.
The encoder takes 30 s per utterance whatever its duration, so `max_duration_s` bounds the audio
a batch reads, not the encoder's memory, which grows with the number of utterances.
Duration batches are packed once per seed and only their order changes between epochs
(fairseq's and ESPnet's way): the number of batches then never changes, and Lightning, which
reads `len(dataloader)` once per fit, stays exact.

Processes (DDP): every process computes the same global list of batches and takes every
`num_replicas`-th one from its `rank`. Training (`shuffle=True`) gives every process the same
number of batches: `drop_uneven` drops the last (fewer than `num_replicas`) batches of the
shuffled epoch, which are different utterances every epoch, or else repeats batches from the
start of the epoch; collective operations then never wait for a process that has run out.
Evaluation (`shuffle=False`) takes every utterance exactly once, longest batches first, and
processes may differ by one batch (evaluation here synchronises processes at epoch end only).

Lightning (2.6), with `use_distributed_sampler=True` (the default) under DDP, re-creates every
DataLoader whose `sampler` is not a `DistributedSampler`, and a DataLoader given a
`batch_sampler` always has a `SequentialSampler` (`DataConnector._requires_distributed_sampler`,
`_prepare_dataloader`). Its `_dataloader_init_kwargs_resolve_sampler`
(`pytorch_lightning/utilities/data.py`) then re-creates the batch sampler with a
`DistributedSampler` in one of three ways: (1) a `BatchSampler` subclass made inside a
`*_dataloader` hook (whose `__init__` arguments `_request_dataloader` records via
`_replace_dunder_methods(BatchSampler)`) is built again from the same arguments with `sampler`
replaced; (2) an object with both `batch_size` and `drop_last` attributes is called as
`cls(sampler, batch_size=…, drop_last=…)`; (3) anything else raises a TypeError. This class takes
way (1): it subclasses `BatchSampler` only for that, accepts the `sampler` Lightning passes and
reads `num_replicas` and `rank` from it; it has no `drop_last` attribute, so one made outside a
hook fails with Lightning's TypeError instead of way (2) garbling it. Build it in
`train_dataloader()`/`val_dataloader()`. Lightning's `_set_sampler_epoch` calls `set_epoch` on
`dataloader.sampler` and `dataloader.batch_sampler.sampler`, never on the batch sampler itself,
so `sampler` returns this object.
"""

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, Sampler

# What a dataset is indexed by: a plain index, or a training sampler's `(index, seed, epoch)`.
ItemKey = int | tuple[int, int, int]


def untag(key: ItemKey, seed: int) -> tuple[int, int, int]:
    """`(index, seed, epoch)` of a dataset key: a tag (`tag_items`) as it is; a plain index
    (evaluation, tests) with `seed`, the dataset's own, and epoch 0."""
    if isinstance(key, tuple):
        index, key_seed, epoch = key
        return int(index), int(key_seed), int(epoch)
    return int(key), seed, 0


class BucketingBatchSampler(BatchSampler):
    """Yields batches (lists of dataset indices) of utterances of similar token length.

    Args:
        lengths: Decoder tokens per utterance (what pads a batch), in dataset order.
        batch_size: Utterances per batch; give this or max_duration_s.
        max_duration_s: Seconds of audio per batch at most (needs durations_s); an utterance
            longer than that gets a batch of its own.
        durations_s: Seconds of audio per utterance, in dataset order.
        shuffle: True for training (new order every epoch, equal batch counts per process);
            False for evaluation (fixed order, every utterance exactly once).
        seed: Seeds the order together with the epoch; the same on every process.
        num_buckets: Length buckets; more groups lengths tighter, fewer mixes batches more.
        num_replicas: Processes sharing the data; None: Lightning's sampler, else
            torch.distributed's world size when initialised, else 1.
        rank: This process among them; None: as num_replicas.
        drop_uneven: Training only: drop the last batches (fewer than num_replicas) so every
            process gets as many; False repeats batches from the epoch's start instead.
        sampler: Set only by Lightning when it re-creates this object under DDP; its
            num_replicas and rank are used, its order is not.
        tag_items: Yield `(index, seed, epoch)` for each item instead of its index, for a
            dataset whose items depend on the epoch (`takes_tagged_items`: packed windows'
            target choices, `WindowDataset`; a cached view, `feature_cache.SampledViews`):
            the tag reaches the item in any DataLoader worker, persistent ones too, without
            shared state, and a resumed run, whose seed and epoch come from this sampler's
            state, reads the same items (`untag` reads a tag or a plain index).
    """

    def __init__(
        self,
        lengths: Sequence[int | float],
        *,
        batch_size: int | None = None,
        max_duration_s: float | None = None,
        durations_s: Sequence[float] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_buckets: int = 10,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_uneven: bool = True,
        sampler: Sampler | None = None,
        tag_items: bool = False,
    ) -> None:
        # BatchSampler.__init__ is not called: it wants a sampler and a fixed batch size. The
        # class is a subclass only so that Lightning records these arguments (module docstring).
        self.lengths = np.asarray(lengths, dtype=np.float64)
        if self.lengths.ndim != 1 or len(self.lengths) == 0:
            raise ValueError("lengths must be a non-empty sequence: one token count per utterance")
        if (batch_size is None) == (max_duration_s is None):
            raise ValueError(
                "give exactly one of batch_size (utterances per batch) and max_duration_s "
                f"(seconds of audio per batch); got batch_size={batch_size}, "
                f"max_duration_s={max_duration_s}"
            )
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.durations_s = None
        if max_duration_s is not None:
            if max_duration_s <= 0:
                raise ValueError(f"max_duration_s must be positive, got {max_duration_s}")
            if durations_s is None or len(durations_s) != len(self.lengths):
                raise ValueError(
                    "max_duration_s needs durations_s: one duration per utterance, "
                    f"{len(self.lengths)} in all"
                )
            self.durations_s = np.asarray(durations_s, dtype=np.float64)
        if seed < 0 or num_buckets < 1:
            raise ValueError(f"need seed >= 0 and num_buckets >= 1, got {seed}, {num_buckets}")
        self.batch_size = batch_size
        self.max_duration_s = max_duration_s
        self.shuffle = shuffle
        self.seed = seed
        self.drop_uneven = drop_uneven
        self.tag_items = tag_items
        self.num_replicas, self.rank = _replicas_and_rank(num_replicas, rank, sampler)
        # Quantile buckets: equal counts, so no bucket is too small to shuffle in.
        by_length = np.argsort(self.lengths, kind="stable")
        self.buckets = np.array_split(by_length, min(num_buckets, len(by_length)))
        self.epoch = 0
        self._done = 0  # batches of `epoch` handed out so far (state_dict)
        # (batches_done, num_replicas) from load_state_dict, turned into this process's start
        # only when iterating: Lightning may re-create the object for another process count.
        self._resume: tuple[int, int] | None = None
        # {(seed, epoch): batches}, filled in place: Lightning replays attribute assignments
        # onto the object it re-creates, and a re-assigned cache would carry another rank's.
        self._cache: dict[tuple[int, int], list[list[int]]] = {}
        n_global = len(self._global_batches(0))
        if shuffle and drop_uneven and n_global < self.num_replicas:
            raise ValueError(
                f"{n_global} training batches cannot feed {self.num_replicas} processes; lower "
                "the batch size (or max_duration_s) or use fewer devices"
            )

    @property
    def sampler(self) -> "BucketingBatchSampler":
        """This object: where Lightning's `_set_sampler_epoch` looks for `set_epoch`."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch's order. The same epoch again keeps a position loaded by
        `load_state_dict` (Lightning calls this right after restoring a checkpoint)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._resume, self._done = None, 0

    def __iter__(self) -> Iterator[list[int] | list[tuple[int, int, int]]]:
        # A generator: the epoch is read at the first batch, after Lightning's set_epoch.
        epoch, start = self.epoch, self._resume_start()
        self._resume, self._done = None, start
        for batch in self._rank_batches()[start:]:
            if self.epoch == epoch:  # set_epoch in the middle restarts the count there
                self._done += 1
            yield [(i, self.seed, epoch) for i in batch] if self.tag_items else batch

    def __len__(self) -> int:
        """Batches this process gets in one epoch (the same for every epoch)."""
        return len(self._rank_batches())

    def state_dict(self) -> dict:
        """Where the epoch stands: `{"epoch", "seed", "batches_done", "num_replicas",
        "num_utterances"}`. `batches_done` counts batches handed to the DataLoader, which draws
        `num_workers × prefetch_factor` batches ahead of the training step; a checkpoint should
        store the number the loop finished instead (equal on every process in training)."""
        return {
            "epoch": self.epoch,
            "seed": self.seed,
            "batches_done": self._done if self._resume is None else self._resume_start(),
            "num_replicas": self.num_replicas,
            "num_utterances": len(self.lengths),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continues an epoch (with the state's seed): the next iteration starts after the
        batches already done.

        Load it where the sampler is made, in `train_dataloader()`: Lightning's
        `FitLoop.setup_data` calls `iter()` on the DataLoader before `set_epoch`, and DataLoader
        workers draw their first batches at `iter()`. Assignments made there survive Lightning
        re-creating the object. A state saved with another number of processes resumes at the
        first batch that none of them had reached (a few may be skipped, none repeated)."""
        if state["num_utterances"] != len(self.lengths):
            raise ValueError(
                f"the sampler state is for {state['num_utterances']} utterances, this dataset "
                f"has {len(self.lengths)}; resume with the manifest the run was started with"
            )
        self.epoch, self.seed = int(state["epoch"]), int(state["seed"])
        self._resume = (int(state["batches_done"]), int(state["num_replicas"]))

    def _resume_start(self) -> int:
        """The first batch of this process that no process had reached when the state was saved."""
        if self._resume is None:
            return 0
        done, num_replicas = self._resume
        return min(math.ceil(done * num_replicas / self.num_replicas), len(self))

    def _rank_batches(self) -> list[list[int]]:
        """This process's batches for the current epoch (cached per seed and epoch)."""
        key = (self.seed, self.epoch)
        if key not in self._cache:
            self._cache.clear()
            self._cache[key] = self._split(self._global_batches(self.epoch))
        return self._cache[key]

    def _global_batches(self, epoch: int) -> list[list[int]]:
        """Every process's batches of one epoch, in the order they are dealt out."""
        if not self.shuffle:  # longest first: a batch too big for memory fails at once
            return self._batch(np.argsort(-self.lengths, kind="stable"))
        if self.max_duration_s is None:
            batches = self._batch(self._bucketed_order(epoch))
        else:  # packed once per seed: the count stays fixed (module docstring)
            batches = self._batch(self._bucketed_order(0))
        order = np.random.default_rng((self.seed, epoch, 1)).permutation(len(batches))
        return [batches[i] for i in order]

    def _bucketed_order(self, epoch: int) -> np.ndarray:
        """All indices, bucket after bucket (shortest first), shuffled inside each bucket.
        Cutting this into batches lets a bucket's remainder share a batch with the next bucket."""
        rng = np.random.default_rng((self.seed, epoch, 0))
        return np.concatenate([rng.permutation(bucket) for bucket in self.buckets])

    def _batch(self, order: np.ndarray) -> list[list[int]]:
        """Cuts indices, in order, into batches of batch_size or at most max_duration_s."""
        if self.durations_s is None:
            size = self.batch_size
            return [order[i : i + size].tolist() for i in range(0, len(order), size)]
        batches: list[list[int]] = []
        current: list[int] = []
        seconds = 0.0
        for index in order.tolist():
            if current and seconds + self.durations_s[index] > self.max_duration_s:
                batches.append(current)
                current, seconds = [], 0.0
            current.append(index)
            seconds += self.durations_s[index]
        batches.append(current)
        return batches

    def _split(self, batches: list[list[int]]) -> list[list[int]]:
        """This process's share: every num_replicas-th batch from its rank."""
        n = self.num_replicas
        if self.shuffle:
            if self.drop_uneven:
                batches = batches[: len(batches) - len(batches) % n]
            else:
                extra = -len(batches) % n
                batches = batches + [batches[i % len(batches)] for i in range(extra)]
        else:
            # Lightning refuses a process with no batch while others have some: split the
            # largest batches until every process gets one (when there are utterances enough).
            while len(batches) < n and max(len(b) for b in batches) > 1:
                largest = max(range(len(batches)), key=lambda i: len(batches[i]))
                half = (len(batches[largest]) + 1) // 2
                batch = batches[largest]
                batches[largest : largest + 1] = [batch[:half], batch[half:]]
        return batches[self.rank :: n]


def _replicas_and_rank(
    num_replicas: int | None, rank: int | None, sampler: Sampler | None
) -> tuple[int, int]:
    """Explicit values first, then those of the DistributedSampler Lightning injects, then
    torch.distributed's, else a single process."""
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = getattr(sampler, "num_replicas", None)
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if initialised else 1
    if rank is None:
        rank = getattr(sampler, "rank", None)
    if rank is None:
        rank = torch.distributed.get_rank() if initialised else 0
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
    return num_replicas, rank
