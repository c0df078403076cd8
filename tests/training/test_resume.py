"""Resume with nothing lost: a run killed (SIGKILL, SIGTERM, a kill inside a checkpoint write)
and resumed ends with the same weights, bit for bit, as the run that was never stopped, and its
metrics log has every step exactly once.

Each run is a subprocess of this file (`python tests/training/test_resume.py <root> <manifest>
…`): a fit of a random micro Whisper on the CPU, 24 utterances in batches of 4 (6 steps an
epoch), 15 steps, a checkpoint every 2 steps and at each epoch's end.
"""

import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from whisper_ft.training.checkpointing import (
    AtomicCheckpointIO,
    BestCheckpoint,
    continue_logs,
    find_best_checkpoint,
    find_last_checkpoint,
    logger_version,
    resilient_callbacks,
    resolve_ckpt_path,
)

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 15


def fit(root: Path, manifest: str, action: str, at_step: int, resume: bool) -> None:
    """One fit (in a subprocess): `action` at the start of step `at_step` is none, sigkill,
    sigterm or kill_in_write (SIGKILL in the middle of the next checkpoint write)."""
    from whisper_ft.data.datamodule import WhisperDataModule
    from whisper_ft.training.module import WhisperFineTuner

    class Stop(pl.Callback):
        def on_train_batch_start(self, trainer, *args) -> None:
            if trainer.global_step != at_step:
                return
            if action == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif action == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            elif action == "kill_in_write":
                real_save = torch.save

                def half_then_kill(obj, f, *args, **kwargs) -> None:
                    real_save(obj, f, *args, **kwargs)
                    Path(f).write_bytes(Path(f).read_bytes()[:1000])  # the write half done
                    os.kill(os.getpid(), signal.SIGKILL)

                torch.save = half_then_kill

    pl.seed_everything(0, verbose=False)
    model = WhisperFineTuner(base_model="random:micro", lr_warmup_steps=2)
    data = WhisperDataModule(train_manifest=manifest, batch_size=4, num_workers=1)
    data.hparams.feature_cache = "off"
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=MAX_STEPS,
        deterministic=True,
        logger=pl.loggers.CSVLogger(root, version=0),
        callbacks=[*resilient_callbacks(every_n_train_steps=2), Stop()],
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    ckpt = find_last_checkpoint(root) if resume else None
    if ckpt is not None:
        continue_logs(trainer.loggers, ckpt)
    trainer.fit(model, data, ckpt_path=ckpt)
    torch.save(model.state_dict(), root / "final.pt")


def run(root: Path, corpus: dict, action: str = "none", at_step: int = -1, resume: bool = False):
    args = [str(root), str(corpus["train"]), action, str(at_step), str(int(resume))]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, timeout=900
    )


def logged_losses(root: Path, name: str = "train_loss") -> list[tuple[int, str]]:
    with (root / "lightning_logs" / "version_0" / "metrics.csv").open(newline="") as f:
        return [(int(r["step"]), r[name]) for r in csv.DictReader(f) if r.get(name)]


def assert_same_run(a: Path, b: Path) -> None:
    weights_a, weights_b = torch.load(a / "final.pt"), torch.load(b / "final.pt")
    assert weights_a.keys() == weights_b.keys()
    for name, value in weights_a.items():
        assert torch.equal(value, weights_b[name]), name
    losses = logged_losses(b)
    assert [step for step, _ in losses] == list(range(MAX_STEPS))  # every step exactly once
    assert losses == logged_losses(a)


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("a")
    out = run(root, corpus)
    assert out.returncode == 0, out.stderr
    return root


# 5: one step after the checkpoint at 4; 13: in the third epoch. After an epoch-end checkpoint:
# test_resume_from_an_epoch_end_checkpoint_draws_the_next_epochs_order.
@pytest.mark.parametrize("at_step", [5, 13])
def test_sigkill_then_resume_gives_the_same_weights_and_log(
    uninterrupted, corpus, tmp_path, at_step
):
    killed = run(tmp_path, corpus, "sigkill", at_step)
    assert killed.returncode == -signal.SIGKILL
    ckpt = torch.load(find_last_checkpoint(tmp_path), weights_only=True)
    assert ckpt["global_step"] == at_step - at_step % 2  # the checkpoint before the kill
    resumed = run(tmp_path, corpus, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(uninterrupted, tmp_path)
    # mid-epoch too: the sampler's state resumes the data order, so Lightning's warning that
    # the dataloader is "not resumable" would be false
    assert "not resumable" not in resumed.stderr


def test_sigterm_saves_where_it_stopped_and_says_how_to_resume(uninterrupted, corpus, tmp_path):
    stopped = run(tmp_path, corpus, "sigterm", 8)
    assert stopped.returncode == 1
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert "stopped at step 9 (SIGTERM)" in stopped.stderr
    assert f"--ckpt_path {last}" in stopped.stderr
    assert (
        torch.load(last, weights_only=True)["global_step"] == 9
    )  # the step it was in finished, none lost
    resumed = run(tmp_path, corpus, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(uninterrupted, tmp_path)


def test_kill_inside_a_checkpoint_write_keeps_the_previous_last_ckpt(
    uninterrupted, corpus, tmp_path
):
    killed = run(tmp_path, corpus, "kill_in_write", 3)
    assert killed.returncode == -signal.SIGKILL
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2  # the one before, whole
    resumed = run(tmp_path, corpus, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(uninterrupted, tmp_path)


def test_disk_full_names_the_folder_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "run" / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)

    def no_space(obj, f, *args, **kwargs) -> None:
        Path(f).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(OSError, match=f"last.ckpt in {path.parent}: .*No space left"):
        io.save_checkpoint({"global_step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"global_step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_mirror_dir_keeps_one_folder_per_run_and_loses_removed_ones(tmp_path):
    io = AtomicCheckpointIO(mirror_dir=tmp_path / "drive")
    run_a = tmp_path / "a" / "lightning_logs" / "version_0" / "checkpoints"
    run_b = tmp_path / "b" / "lightning_logs" / "version_0" / "checkpoints"
    io.save_checkpoint({"global_step": 500}, run_a / "last.ckpt")
    io.save_checkpoint({"global_step": 3}, tmp_path / "run_b" / "last.ckpt")
    io.save_checkpoint({"global_step": 3}, run_b.parent.parent / "version_1" / "x" / "y.ckpt")
    mirrored = tmp_path / "drive" / "lightning_logs" / "version_0" / "last.ckpt"
    assert torch.load(mirrored, weights_only=True) == {"global_step": 500}  # not overwritten
    assert torch.load(tmp_path / "drive" / "run_b" / "last.ckpt", weights_only=True)
    io.remove_checkpoint(run_a / "last.ckpt")
    assert not mirrored.exists()


def test_a_failed_mirror_copy_warns_and_the_next_save_copies_again(tmp_path):
    drive = tmp_path / "drive"
    drive.write_text("not a folder: every copy into it fails")  # as an unmounted Drive would
    io = AtomicCheckpointIO(mirror_dir=drive)
    last = tmp_path / "run" / "last.ckpt"
    with pytest.warns(UserWarning, match=r"could not copy checkpoint last.ckpt .*training goes on"):
        io.save_checkpoint({"global_step": 1}, last)
    assert torch.load(last, weights_only=True) == {"global_step": 1}  # the local one is written
    drive.unlink()  # mounted again
    io.save_checkpoint({"global_step": 2}, last)
    assert torch.load(drive / "run" / "last.ckpt", weights_only=True) == {"global_step": 2}


def test_best_checkpoint_skips_validations_without_val_cer(tmp_path):
    best = BestCheckpoint(dirpath=str(tmp_path))
    best._save_topk_checkpoint(trainer=None, monitor_candidates={"val_loss": torch.tensor(1.0)})
    assert list(tmp_path.iterdir()) == []


def test_last_names_the_run_and_refuses_when_two_runs_share_the_root(tmp_path, capsys):
    folders = [tmp_path / "lightning_logs" / f"version_{v}" / "checkpoints" for v in (0, 3)]
    folders[1].mkdir(parents=True)
    (folders[1] / "last.ckpt").write_bytes(b"x")
    found = resolve_ckpt_path("last", {"default_root_dir": str(tmp_path)})
    assert found == str(folders[1] / "last.ckpt")
    assert f"resuming from {found}" in capsys.readouterr().out
    assert logger_version(found) == 3
    folders[0].mkdir(parents=True)
    (folders[0] / "last.ckpt").write_bytes(b"x")
    with pytest.raises(ValueError, match="--ckpt_path last: 2 runs under .* have a last.ckpt") as e:
        resolve_ckpt_path("last", {"default_root_dir": str(tmp_path)})
    assert all(str(folder / "last.ckpt") in str(e.value) for folder in folders)
    assert "resume one with --ckpt_path <its path>" in str(e.value)
    assert resolve_ckpt_path("x.ckpt", {}) == "x.ckpt"
    with pytest.raises(FileNotFoundError, match="no last.ckpt under"):
        resolve_ckpt_path("last", {"default_root_dir": str(tmp_path / "empty")})


def test_best_resolves_to_the_lowest_val_cer_of_the_newest_run(tmp_path):
    old = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    new = tmp_path / "lightning_logs" / "version_1" / "checkpoints"
    for folder, names in (
        (old, ["epoch=0-step=9-val_cer=0.0100.ckpt", "last.ckpt"]),  # best overall, older run
        (new, ["epoch=0-step=10-val_cer=0.5000.ckpt", "epoch=1-step=20-val_cer=0.2500.ckpt",
               "epoch=2-step=30-val_cer=0.3000.ckpt", "last.ckpt"]),
    ):  # fmt: skip
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).write_bytes(b"x")
    os.utime(old / "last.ckpt", (0, 0))
    found = resolve_ckpt_path("best", {"default_root_dir": str(tmp_path)})
    assert found == str(new / "epoch=1-step=20-val_cer=0.2500.ckpt")
    # a run without kept val_cer checkpoints (no validation): its last.ckpt
    for path in new.glob("*val_cer*"):
        path.unlink()
    assert find_best_checkpoint(new.parent) == new / "last.ckpt"
    assert find_best_checkpoint(tmp_path / "nowhere") is None
    with pytest.raises(FileNotFoundError, match="--ckpt_path best: no last.ckpt under"):
        resolve_ckpt_path("best", {"default_root_dir": str(tmp_path / "empty")})


# The run: 18 training utterances in batches of 16 (2 steps an epoch, the second of 2
# utterances), validation at every epoch's end, seed 7, 6 steps; last.ckpt every 3 steps and at
# each epoch's last step (2, 3, 4, 6), so resumes start from epoch-end and mid-epoch states.
EPOCH_MAX_STEPS = 6
EPOCH_EVERY_N_STEPS = 3
# Every moment of that run a kill can hit, in the order the run meets them: each step boundary
# (`step:K`, K steps done), the middle of each validation (`val:S`, after step S) and of each
# checkpoint write (`write:S:last` or `:best`, the top-k file written after a validation).
KILL_POINTS = [
    "step:1", "write:2:last", "val:2", "write:2:best", "step:2", "write:3:last", "step:3",
    "write:4:last", "val:4", "write:4:best", "step:4", "step:5", "write:6:last", "val:6",
    "write:6:best",
]  # fmt: skip


def fit_epochs(
    root: Path, train: str, val: str, kill_at: str, resume: bool, snapshots: str
) -> None:
    """One fit (in a subprocess), SIGKILLed at kill point `kill_at` (`none`: never). With
    `snapshots` (a folder; `-`: none) it copies `root` at every kill point as a SIGKILL there
    would leave it, into `snapshots/<point>`, lists the points in `snapshots/met`, and goes on."""
    from whisper_ft.data.datamodule import WhisperDataModule
    from whisper_ft.training.module import WhisperFineTuner

    def reach(point: str, writing: Path | None = None) -> None:
        """`writing`: the checkpoint being written, whole; a kill leaves it half written."""
        if snapshots != "-":
            copy = Path(snapshots) / point.replace(":", "-")
            # Checkpoints are never changed in place (atomic writes): a hard link keeps the
            # state of each at this moment without copying 40 MB.
            shutil.copytree(root, copy, copy_function=link_checkpoints)
            if writing is not None:
                half = copy / writing.relative_to(root)
                half.write_bytes(writing.read_bytes()[:1000])
            with (Path(snapshots) / "met").open("a") as f:
                f.write(point + "\n")
        if point == kill_at:
            if writing is not None:
                writing.write_bytes(writing.read_bytes()[:1000])  # the write half done
            os.kill(os.getpid(), signal.SIGKILL)

    class Kill(pl.Callback):
        def on_train_batch_start(self, trainer, *args) -> None:
            if trainer.global_step > 0:
                reach(f"step:{trainer.global_step}")

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
            if batch_idx == 1:
                reach(f"val:{trainer.global_step}")

    real_save = torch.save

    def save_and_reach(obj, f, *args, **kwargs) -> None:
        real_save(obj, f, *args, **kwargs)
        if isinstance(f, (str, Path)) and str(f).endswith(".tmp"):  # a checkpoint's write
            kind = "last" if Path(f).name.startswith(".last.ckpt") else "best"
            reach(f"write:{obj['global_step']}:{kind}", Path(f).resolve())

    torch.save = save_and_reach
    pl.seed_everything(7, verbose=False)
    model = WhisperFineTuner(base_model="random:micro", lr_warmup_steps=2)
    data = WhisperDataModule(
        train_manifest=train, val_manifest=val, batch_size=16, eval_batch_size=2, num_workers=1
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=EPOCH_MAX_STEPS,
        deterministic=True,
        logger=pl.loggers.CSVLogger(root, version=0),
        callbacks=[*resilient_callbacks(every_n_train_steps=EPOCH_EVERY_N_STEPS), Kill()],
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    ckpt = find_last_checkpoint(root) if resume else None
    if ckpt is not None:
        continue_logs(trainer.loggers, ckpt)
    trainer.fit(model, data, ckpt_path=ckpt)
    real_save(model.state_dict(), root / "final.pt")


def link_checkpoints(src: str, dst: str) -> None:
    """copytree's copy_function: hard links for checkpoints, copies for the rest (logs)."""
    if src.endswith(".ckpt"):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def two_step_epochs(corpus, tmp_path_factory) -> dict:
    """The issue's corpus: the first 18 training lines; 3 validation lines."""
    folder = Path(corpus["train"]).parent
    lines = Path(corpus["train"]).read_text(encoding="utf-8").splitlines()[:18]
    train = folder / "train18.jsonl"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"train": train, "val": corpus["val"]}


def run_epochs(
    root: Path, data: dict, kill_at: str = "none", resume: bool = False, snapshots: str = "-"
):
    args = [str(root), str(data["train"]), str(data["val"]), kill_at, str(int(resume)), snapshots]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, __file__, "epochs", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def uninterrupted_epochs(two_step_epochs, tmp_path_factory) -> dict:
    """The run never stopped (`reference`), with a copy of its folder at every kill point
    (`snapshots`), and `run`: where it ran, where each kill point resumes (the same path)."""
    folder = tmp_path_factory.mktemp("epochs")
    run, snapshots = folder / "run", folder / "snapshots"
    snapshots.mkdir()
    out = run_epochs(run, two_step_epochs, snapshots=str(snapshots))
    assert out.returncode == 0, out.stderr
    assert (snapshots / "met").read_text().split() == KILL_POINTS  # no kill point untried
    run.rename(folder / "reference")
    return {"reference": folder / "reference", "snapshots": snapshots, "run": run}


def assert_bit_identical(a: Path, b: Path, max_steps: int) -> None:
    """Every tensor of the final weights equal, every step logged once with the same loss."""
    weights_a, weights_b = torch.load(a / "final.pt"), torch.load(b / "final.pt")
    assert weights_a.keys() == weights_b.keys()
    different = [
        name for name, value in weights_a.items() if not torch.equal(value, weights_b[name])
    ]
    assert different == []
    losses = logged_losses(b)
    assert [step for step, _ in losses] == list(range(max_steps))
    assert losses == logged_losses(a)


def resume_epochs(data: dict, root: Path) -> int:
    """Resumes a killed run in `root` to the end; returns the steps the kill lost."""
    reached = max((step for step, _ in logged_losses(root)), default=-1) + 1
    last = find_last_checkpoint(root)
    saved = 0 if last is None else torch.load(last, weights_only=True)["global_step"]
    resumed = run_epochs(root, data, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    return reached - saved


def training_state(ckpt: Path) -> dict:
    """What a resume continues from: weights, optimizer, schedule, loops, sampler position."""
    state = torch.load(ckpt, weights_only=True)
    keys = ("state_dict", "optimizer_states", "lr_schedulers", "loops", "WhisperDataModule")
    return {key: state[key] for key in keys}


def same(a, b) -> bool:
    """Nested checkpoint contents equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def test_resume_from_an_epoch_end_checkpoint_draws_the_next_epochs_order(
    two_step_epochs, uninterrupted_epochs, tmp_path
):
    # The case, killed for real right after the epoch-0 last.ckpt (step 2): a
    # checkpoint saved in on_train_epoch_end made Lightning count that epoch (and a logging
    # step) twice on resume, so the sampler drew the next epoch's order and the log went a step
    # off. It also shows that the copies the kill-anywhere test resumes from are what a kill
    # leaves: the same training state and log.
    killed = run_epochs(tmp_path, two_step_epochs, "step:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    snapshot = uninterrupted_epochs["snapshots"] / "step-2"
    last = Path("lightning_logs") / "version_0" / "checkpoints" / "last.ckpt"
    state = training_state(tmp_path / last)
    assert state["loops"]["fit_loop"]["epoch_progress"]["total"]["processed"] == 0
    assert state["WhisperDataModule"]["train_sampler"]["batches_done"] == 2
    assert same(state, training_state(snapshot / last))
    assert logged_losses(tmp_path) == logged_losses(snapshot)
    assert resume_epochs(two_step_epochs, tmp_path) == 0
    assert_bit_identical(uninterrupted_epochs["reference"], tmp_path, EPOCH_MAX_STEPS)


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_kill_anywhere_then_resume_gives_bit_identical_weights(
    two_step_epochs, uninterrupted_epochs, kill_at
):
    # The folder as a SIGKILL at `kill_at` leaves it, resumed in the path it was written in.
    run = uninterrupted_epochs["run"]
    shutil.rmtree(run, ignore_errors=True)
    snapshot = uninterrupted_epochs["snapshots"] / kill_at.replace(":", "-")
    shutil.copytree(snapshot, run, copy_function=link_checkpoints)
    lost = resume_epochs(two_step_epochs, run)
    assert lost <= EPOCH_EVERY_N_STEPS
    assert_bit_identical(uninterrupted_epochs["reference"], run, EPOCH_MAX_STEPS)
    # Every validation logged once, but the one killed: the epoch's checkpoint, taken before
    # it, resumes after it (Lightning counts that epoch done).
    where, _, step = kill_at.partition(":")
    killed = [int(step) - 1] if where == "val" else []
    expected = logged_losses(uninterrupted_epochs["reference"], "val_loss")
    expected = [(s, loss) for s, loss in expected if s not in killed]
    assert logged_losses(run, "val_loss") == expected
    print(f"{kill_at}: {lost} steps lost")


if __name__ == "__main__":
    if sys.argv[1] == "epochs":
        root, train, val, kill_at, resume, snapshots = sys.argv[2:]
        fit_epochs(Path(root), train, val, kill_at, bool(int(resume)), snapshots)
    else:
        root, manifest, action, at_step, resume = sys.argv[1:]
        fit(Path(root), manifest, action, int(at_step), bool(int(resume)))
