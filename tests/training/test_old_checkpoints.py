"""A checkpoint written by the flat layout (commit 98b2274, before the rooms) still resumes,
tests, exports and transcribes with this tree: the old code is unpacked from git history and
fits a random micro Whisper for two steps; nothing but this test's temporary folder is written.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import whisper

from whisper_ft.cli.entry import main

REPO = Path(__file__).resolve().parents[2]
FLAT_LAYOUT = "98b2274"  # the last commits before the rooms had whisper_ft/module.py etc.


def git(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, **kwargs)


@pytest.fixture(scope="module")
def old_checkpoint(corpus, tmp_path_factory) -> Path:
    """last.ckpt of a 2-step fit by the flat layout's own `python -m whisper_ft fit`."""
    try:
        known = git("cat-file", "-e", f"{FLAT_LAYOUT}^{{commit}}").returncode == 0
    except FileNotFoundError:
        known = False
    if not known:
        pytest.skip(f"needs git and commit {FLAT_LAYOUT} (a full clone, not a shallow one)")
    root = tmp_path_factory.mktemp("flat_layout")
    archive = git("archive", FLAT_LAYOUT, "whisper_ft", check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    assert (root / "whisper_ft" / "module.py").is_file()  # the old layout, not this one
    fit = subprocess.run(
        [sys.executable, "-m", "whisper_ft", "fit", "--model.base_model", "random:micro",
         "--data.train_manifest", str(corpus["train"]), "--data.batch_size", "4",
         "--data.num_workers", "0", "--data.feature_cache", "off",
         "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false",
         "--trainer.default_root_dir", str(root / "run")],
        cwd=root, env=os.environ | {"PYTHONPATH": str(root)}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    [ckpt] = (root / "run").rglob("last.ckpt")
    return ckpt


def run(args: list[str]) -> None:
    """`python -m whisper_ft ARGS` in this process: fit/test return, other verbs exit 0."""
    try:
        main(args)
    except SystemExit as exit_:
        assert exit_.code in (0, None), exit_.code


QUIET = ["--trainer.enable_progress_bar", "false", "--data.num_workers", "0"]


def test_a_flat_layout_checkpoint_resumes_tests_exports_and_transcribes(
    old_checkpoint, corpus, tmp_path, capsys
):
    assert torch.load(old_checkpoint, weights_only=True)["global_step"] == 2

    run(["fit", "--data.train_manifest", str(corpus["train"]), "--data.batch_size", "4",
         "--data.feature_cache", "off", "--trainer.max_steps", "4",
         "--trainer.default_root_dir", str(tmp_path / "resumed"),
         "--ckpt_path", str(old_checkpoint), *QUIET])  # fmt: skip
    [resumed] = (tmp_path / "resumed").rglob("last.ckpt")
    state = torch.load(resumed, weights_only=True)
    assert state["global_step"] == 4  # went on from step 2, not from 0
    assert state["hyper_parameters"]["base_model"] == "random:micro"  # the old run's hparams

    run(["test", "--data.test_manifest", str(corpus["test"]), "--data.feature_cache", "off",
         "--trainer.default_root_dir", str(tmp_path / "tested"),
         "--ckpt_path", str(old_checkpoint), "--model.retention_language", "", *QUIET])  # fmt: skip
    [metrics] = (tmp_path / "tested").rglob("metrics.json")
    assert "kana_cer" in metrics.read_text()

    run(["export", str(old_checkpoint), str(tmp_path / "old.pt")])
    exported = whisper.load_model(str(tmp_path / "old.pt"), device="cpu")
    weights = torch.load(old_checkpoint, weights_only=True)["state_dict"]
    name = "decoder.token_embedding.weight"
    assert torch.equal(exported.state_dict()[name], weights[f"model.{name}"])

    capsys.readouterr()
    wav = next(Path(corpus["test"]).parent.rglob("*.wav"))
    run(["transcribe", "--model", str(old_checkpoint), str(wav), "--quiet"])
    [row] = capsys.readouterr().out.splitlines()
    assert row.startswith(f"{wav}\t")
