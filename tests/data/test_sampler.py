import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.data import _replace_dunder_methods, _set_sampler_epoch
from pytorch_lightning.trainer.states import RunningStage
from pytorch_lightning.utilities.data import _update_dataloader
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from whisper_ft.data.sampler import BucketingBatchSampler, untag


def _lengths(n: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(5, 120, n)


def _flat(batches) -> list[int]:
    return [i for batch in batches for i in batch]


def test_the_same_seed_and_epoch_give_the_same_batches():
    lengths = _lengths()
    first = list(BucketingBatchSampler(lengths, batch_size=8, seed=1))
    assert first == list(BucketingBatchSampler(lengths, batch_size=8, seed=1))
    assert first != list(BucketingBatchSampler(lengths, batch_size=8, seed=2))
    sampler = BucketingBatchSampler(lengths, batch_size=8, seed=1)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


@pytest.mark.parametrize("shuffle", [True, False])
def test_every_utterance_once_per_epoch(shuffle):
    lengths = _lengths(203)
    sampler = BucketingBatchSampler(lengths, batch_size=8, shuffle=shuffle)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(_flat(batches)) == list(range(203))
        assert len(batches) == len(sampler) == 26  # ceil(203 / 8): bucket remainders merge
        assert all(isinstance(i, int) for i in batches[0])


def test_batches_group_similar_lengths():
    lengths = _lengths()
    batches = list(BucketingBatchSampler(lengths, batch_size=8))
    spread = np.mean([np.ptp(lengths[batch]) for batch in batches])
    order = np.random.default_rng(5).permutation(len(lengths))
    random_spread = np.mean([np.ptp(lengths[order[i : i + 8]]) for i in range(0, 200, 8)])
    assert spread < random_spread / 4  # measured: 11.6 tokens against 92.6


def test_longest_batch_comes_first_in_evaluation():
    lengths = _lengths()
    batches = list(BucketingBatchSampler(lengths, batch_size=8, shuffle=False))
    assert lengths[batches[0]].min() >= lengths[batches[1]].max()
    assert max(lengths[batches[0]]) == lengths.max()


def test_duration_batches_stay_within_the_budget():
    lengths = _lengths()
    durations = np.random.default_rng(1).uniform(0.5, 10.0, 200)
    durations[17] = 25.0  # longer than the budget: a batch of its own
    sampler = BucketingBatchSampler(lengths, max_duration_s=20.0, durations_s=durations)
    epoch0 = list(sampler)
    assert sorted(_flat(epoch0)) == list(range(200))
    assert [17] in epoch0
    assert all(durations[b].sum() <= 20.0 for b in epoch0 if b != [17])
    assert np.mean([durations[b].sum() for b in epoch0]) > 15.0  # packed, not one per batch
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert len(epoch1) == len(epoch0) == len(sampler)  # fixed count: Lightning reads it once
    assert epoch1 != epoch0 and sorted(epoch1) == sorted(epoch0)  # same batches, new order


def test_batch_size_or_duration_exactly_one():
    with pytest.raises(ValueError, match="exactly one of batch_size"):
        BucketingBatchSampler([3, 4], batch_size=2, max_duration_s=10.0, durations_s=[1, 2])
    with pytest.raises(ValueError, match="exactly one of batch_size"):
        BucketingBatchSampler([3, 4])
    with pytest.raises(ValueError, match="needs durations_s"):
        BucketingBatchSampler([3, 4], max_duration_s=10.0)


def test_evaluation_shares_are_disjoint_complete_and_stable():
    lengths = _lengths(197)  # 25 batches: the processes get 13 and 12
    ranks = [
        BucketingBatchSampler(lengths, batch_size=8, shuffle=False, num_replicas=2, rank=r)
        for r in (0, 1)
    ]
    shares = [_flat(s) for s in ranks]
    assert [len(s) for s in ranks] == [13, 12]
    assert set(shares[0]).isdisjoint(shares[1])
    assert sorted(shares[0] + shares[1]) == list(range(197))
    ranks[0].set_epoch(4)
    assert _flat(ranks[0]) == shares[0]


def test_evaluation_with_fewer_batches_than_processes_splits_them():
    ranks = [
        BucketingBatchSampler([3, 9, 4, 7, 5], batch_size=8, shuffle=False, num_replicas=2, rank=r)
        for r in (0, 1)
    ]
    shares = [list(s) for s in ranks]
    assert [len(s) for s in shares] == [1, 1]
    assert sorted(_flat(shares[0] + shares[1])) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("num_replicas", [2, 3])
def test_training_shares_are_equal_and_disjoint(num_replicas):
    lengths = _lengths()  # 25 batches of 8
    dropped = set()
    for epoch in range(2):
        ranks = []
        for r in range(num_replicas):
            sampler = BucketingBatchSampler(
                lengths, batch_size=8, seed=4, num_replicas=num_replicas, rank=r
            )
            sampler.set_epoch(epoch)
            ranks.append(list(sampler))
            assert len(sampler) == len(ranks[-1]) == 25 // num_replicas
        seen = _flat(itertools.chain(*ranks))
        assert len(seen) == len(set(seen))
        assert len(seen) == 8 * (25 - 25 % num_replicas)
        dropped.add(frozenset(range(200)) - frozenset(seen))
    assert len(dropped) == 2  # a different remainder is left out each epoch


def test_training_without_dropping_repeats_batches_to_even_the_shares():
    lengths = _lengths()
    ranks = [
        list(
            BucketingBatchSampler(lengths, batch_size=8, num_replicas=2, rank=r, drop_uneven=False)
        )
        for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 13
    seen = _flat(ranks[0] + ranks[1])
    assert set(seen) == set(range(200)) and len(seen) == 208  # one batch twice


def test_too_few_training_batches_for_the_processes_is_an_error():
    with pytest.raises(ValueError, match="cannot feed 4 processes"):
        BucketingBatchSampler([3, 4, 5], batch_size=2, num_replicas=4, rank=0)


def test_processes_come_from_arguments_then_lightnings_sampler_then_one():
    single = BucketingBatchSampler([3, 4], batch_size=1)
    assert (single.num_replicas, single.rank) == (1, 0)  # torch.distributed not initialised
    injected = DistributedSampler(range(10), num_replicas=4, rank=2)
    from_lightning = BucketingBatchSampler(range(10), batch_size=1, sampler=injected)
    assert (from_lightning.num_replicas, from_lightning.rank) == (4, 2)
    assert from_lightning.sampler is from_lightning  # where Lightning calls set_epoch
    with pytest.raises(ValueError, match="rank must be in"):
        BucketingBatchSampler([3, 4], batch_size=1, num_replicas=2, rank=2)


def test_resume_mid_epoch_yields_exactly_the_remaining_batches():
    lengths = _lengths()
    sampler = BucketingBatchSampler(lengths, batch_size=8, seed=7)
    sampler.set_epoch(2)
    full = list(sampler)
    assert sampler.state_dict()["batches_done"] == 25  # a finished epoch
    head = list(itertools.islice(iter(sampler), 9))
    state = sampler.state_dict()
    assert state == {
        "epoch": 2,
        "seed": 7,
        "batches_done": 9,
        "num_replicas": 1,
        "num_utterances": 200,
    }
    resumed = BucketingBatchSampler(lengths, batch_size=8, seed=0)  # seed comes from the state
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # Lightning calls this after restoring: the position is kept
    assert head + list(resumed) == full
    assert list(resumed) == full  # the next pass over the same epoch is whole again
    resumed.set_epoch(3)
    assert list(resumed) != full and sorted(_flat(resumed)) == list(range(200))


def test_tags_carry_each_epoch_and_the_seed_after_a_resume_too():
    sampler = BucketingBatchSampler(_lengths(), batch_size=8, seed=7, tag_items=True)
    plain = BucketingBatchSampler(_lengths(), batch_size=8, seed=7)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        plain.set_epoch(epoch)
        tagged = list(sampler)
        assert [[i for i, _, _ in batch] for batch in tagged] == list(plain)  # the same order
        assert {(s, e) for batch in tagged for _, s, e in batch} == {(7, epoch)}
    resumed = BucketingBatchSampler(_lengths(), batch_size=8, seed=0, tag_items=True)
    resumed.load_state_dict(sampler.state_dict() | {"epoch": 4, "batches_done": 2})
    plain.set_epoch(4)
    rest = list(resumed)
    assert [[i for i, _, _ in batch] for batch in rest] == list(plain)[2:]
    assert {(s, e) for batch in rest for _, s, e in batch} == {(7, 4)}  # the state's, not 0


def test_untag_reads_a_tag_or_a_plain_index():
    assert untag((5, 7, 3), seed=0) == (5, 7, 3)
    assert untag(np.int64(5), seed=2) == (5, 2, 0) and type(untag(np.int64(5), 2)[0]) is int


def test_resume_with_fewer_processes_skips_nothing_twice():
    lengths = _lengths()
    ranks = [BucketingBatchSampler(lengths, batch_size=8, num_replicas=2, rank=r) for r in (0, 1)]
    consumed = [list(itertools.islice(iter(s), 5)) for s in ranks]
    single = BucketingBatchSampler(lengths, batch_size=8)
    single.load_state_dict(ranks[0].state_dict())
    rest = list(single)
    assert rest == list(BucketingBatchSampler(lengths, batch_size=8))[10:]
    seen = _flat(consumed[0] + consumed[1] + rest)
    assert sorted(seen) == list(range(200))


def test_a_state_for_another_dataset_is_refused():
    state = BucketingBatchSampler(_lengths(), batch_size=8).state_dict()
    with pytest.raises(ValueError, match="state is for 200 utterances, this dataset has 150"):
        BucketingBatchSampler(_lengths(150), batch_size=8).load_state_dict(state)


def test_lightning_rebuilds_it_with_its_distributed_sampler_and_keeps_settings():
    """What Lightning does under DDP with use_distributed_sampler=True (data_connector.py
    `_request_dataloader` records the arguments, `_prepare_dataloader` re-creates)."""
    lengths = _lengths()
    dataset = list(range(200))
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        # made in the hook as the data module will, with a checkpoint's state loaded at once
        sampler = BucketingBatchSampler(lengths, batch_size=8, seed=0)
        state = {"epoch": 1, "seed": 3, "batches_done": 4, "num_replicas": 2}
        sampler.load_state_dict(sampler.state_dict() | state)
        assert len(sampler) == 25  # one process until Lightning says otherwise
        loader = DataLoader(dataset, batch_sampler=sampler)
    injected = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True)
    rebuilt = _update_dataloader(loader, injected, mode=RunningStage.TRAINING).batch_sampler
    assert type(rebuilt) is BucketingBatchSampler and rebuilt is not sampler
    assert (rebuilt.num_replicas, rebuilt.rank, rebuilt.batch_size, len(rebuilt)) == (2, 1, 8, 12)
    assert rebuilt.state_dict() | state == rebuilt.state_dict()  # the loaded state came along
    direct = BucketingBatchSampler(lengths, batch_size=8, seed=3, num_replicas=2, rank=1)
    direct.set_epoch(1)
    assert list(rebuilt) == list(direct)[4:]
    _set_sampler_epoch(DataLoader(dataset, batch_sampler=rebuilt), 5)
    assert rebuilt.epoch == 5


# A real two-process run: Lightning's own DDP start-up, data connector and fit loop.

TRAIN_LENGTHS = [(7 * i) % 23 + 1 for i in range(36)]  # 9 batches of 4: 4 per process
VAL_LENGTHS = [(5 * i) % 11 + 1 for i in range(17)]  # 5 batches of 4: 3 and 2


class _RecordingModule(pl.LightningModule):
    """Writes, per process, the utterance indices of every train and validation batch."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.seen: list[dict] = []

    def train_dataloader(self) -> DataLoader:
        self.made = BucketingBatchSampler(TRAIN_LENGTHS, batch_size=4, seed=3)
        return DataLoader(list(range(36)), batch_sampler=self.made)

    def val_dataloader(self) -> DataLoader:
        sampler = BucketingBatchSampler(VAL_LENGTHS, batch_size=4, shuffle=False)
        return DataLoader(list(range(17)), batch_sampler=sampler)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        sampler = self.trainer.train_dataloader.batch_sampler
        self.seen.append(
            {
                "stage": "train",
                "epoch": self.current_epoch,
                "sampler_epoch": sampler.epoch,
                "replicas": [sampler.num_replicas, sampler.rank],
                "rebuilt": sampler is not self.made,
                "indices": batch.tolist(),
            }
        )
        return (self.weight * batch.float().mean()).sum()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.seen.append({"stage": "val", "epoch": self.current_epoch, "indices": batch.tolist()})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def on_fit_end(self) -> None:
        Path(self.out_dir, f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))


def test_two_process_lightning_ddp_shares_the_data(tmp_path):
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",  # use_distributed_sampler stays at its default, True
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(_RecordingModule(str(tmp_path)))
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    train = [[x for x in rec if x["stage"] == "train"] for rec in records]
    for rank, steps in enumerate(train):
        assert {tuple(x["replicas"]) for x in steps} == {(2, rank)}
        assert all(x["rebuilt"] for x in steps)  # Lightning re-created it, as read in its code
        assert all(x["sampler_epoch"] == x["epoch"] for x in steps)  # set_epoch reached it
    orders = {}
    for epoch in (0, 1):
        shares = [[x["indices"] for x in steps if x["epoch"] == epoch] for steps in train]
        assert [len(s) for s in shares] == [4, 4]  # equal steps: 9 batches, 1 dropped
        seen = _flat(shares[0] + shares[1])
        assert len(seen) == len(set(seen)) == 32
        orders[epoch] = shares
        val = [
            [x["indices"] for x in rec if x["stage"] == "val" and x["epoch"] == epoch]
            for rec in records
        ]
        assert [len(s) for s in val] == [3, 2]
        assert sorted(_flat(val[0] + val[1])) == list(range(17))  # each once, no padding
    assert orders[0] != orders[1]


class _EpochModule(pl.LightningModule):
    """Records, per training step, (step, epoch, the epoch its sampler was last set to)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, int, int]] = []

    def train_dataloader(self) -> DataLoader:
        sampler = BucketingBatchSampler([1] * 8, batch_size=4, seed=1)  # 2 steps an epoch
        return DataLoader(list(range(8)), batch_sampler=sampler)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        sampler = self.trainer.train_dataloader.batch_sampler
        self.seen.append((self.global_step, self.current_epoch, sampler.epoch))
        loss = ((self.weight - batch.float().mean()) ** 2).sum()
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit_steps(root: Path, max_steps: int, ckpt: Path | None = None) -> tuple[list, list[int]]:
    """(what _EpochModule saw, the steps logged) of a fit with ResumableCheckpoint."""
    import csv

    from whisper_ft.training.checkpointing import ResumableCheckpoint

    module = _EpochModule()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=pl.loggers.CSVLogger(root, version=0),
        callbacks=[ResumableCheckpoint(every_n_minutes=60)],  # only epoch ends and the fit's end
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(module, ckpt_path=ckpt)
    with (root / "lightning_logs" / "version_0" / "metrics.csv").open(newline="") as f:
        return module.seen, [int(row["step"]) for row in csv.DictReader(f)]


@pytest.mark.parametrize("first_steps", [2, 3])  # an epoch's end; the middle of the next one
def test_resuming_sets_each_epoch_once_and_logs_each_step_once(tmp_path, first_steps):
    # Lightning 2.6 restarted a last.ckpt saved in on_train_epoch_end by running that epoch's
    # end again: the epoch and a logging step were counted twice, so set_epoch went one epoch
    # ahead from then on, and every later step was logged one step on.
    straight, straight_steps = _fit_steps(tmp_path / "straight", max_steps=6)
    assert [epoch for _, epoch, _ in straight] == [0, 0, 1, 1, 2, 2]
    _fit_steps(tmp_path / "resumed", max_steps=first_steps)
    last = tmp_path / "resumed" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    resumed, resumed_steps = _fit_steps(tmp_path / "resumed", max_steps=6, ckpt=last)
    assert resumed == straight[first_steps:]  # (step, epoch, sampler epoch) of every step
    assert resumed_steps == straight_steps[first_steps:] == list(range(first_steps, 6))
