"""What a fit leaves of the process's warning filters, and what a fit's output leaves out."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

from whisper_ft.data.datamodule import WhisperDataModule

REPO = Path(__file__).resolve().parents[1]


def test_a_fit_leaves_the_warning_filters_as_they_were(micro, corpus, make_trainer):
    data = WhisperDataModule(train_manifest=str(corpus["train"]), batch_size=4, num_workers=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        make_trainer(max_steps=1, limit_val_batches=0).fit(micro, data)
        after = list(warnings.filters)
    assert after == before
    # the frozen encoder's eval mode is still not reported
    assert not [w for w in caught if "in eval mode" in str(w.message)]


def test_a_fit_from_the_command_line_prints_no_lightning_tips_nor_pytree_warning(corpus, tmp_path):
    env = os.environ | {"PYTHONPATH": str(REPO)}
    fit = subprocess.run(
        [sys.executable, "-m", "whisper_ft", "fit", "--model.base_model", "random:micro",
         "--data.train_manifest", str(corpus["train"]), "--data.batch_size", "4",
         "--data.num_workers", "0", "--trainer.max_steps", "1",
         "--trainer.enable_progress_bar", "false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    output = fit.stdout + fit.stderr
    assert "`Trainer.fit` stopped: `max_steps=1` reached" in output  # Lightning's info stays
    assert "Tip" not in output and "_pytree" not in output


def test_every_verb_runs_without_lightning_tips_nor_pytree_warning(monkeypatch, caplog):
    """The demo (and test, cache) reach Lightning through argparse verbs, not LightningCLI."""
    import argparse
    import logging

    from pytorch_lightning.utilities.rank_zero import rank_zero_info

    import whisper_ft.cli.entry as cli

    def lightning_like(args):
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing litlogger")
        rank_zero_info("GPU available: False, used: False")  # Lightning's real info stays
        warnings.warn_explicit(
            "`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning,
            "pytorch_lightning/utilities/_pytree.py", 21,
            module="pytorch_lightning.utilities._pytree",
        )  # fmt: skip
        warnings.warn_explicit(
            "Total length of `list` across ranks is zero. Please make sure this was your "
            "intention.", UserWarning, "pytorch_lightning/utilities/data.py", 106,
            module="pytorch_lightning.utilities.data",
        )  # fmt: skip
        warnings.warn("a warning of the user's own", FutureWarning, stacklevel=1)
        return 0

    parser = argparse.ArgumentParser()
    parser.add_subparsers(dest="command").add_parser("demo").set_defaults(func=lightning_like)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cli.main(["demo"])
        except SystemExit as done:
            assert done.code == 0
    logged = [record.getMessage() for record in caplog.records]
    assert "GPU available: False, used: False" in logged
    assert not [m for m in logged if "Tip" in m]
    assert [str(w.message) for w in caught] == ["a warning of the user's own"]
