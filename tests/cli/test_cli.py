"""The command line as a user runs it: `python -m whisper_ft …` in a fresh folder."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import whisper

from whisper_ft.cli.entry import main
from whisper_ft.data.datamodule import WhisperDataModule
from whisper_ft.precision import default_precision
from whisper_ft.recipes import recipe_names

REPO = Path(__file__).resolve().parents[2]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "whisper_ft", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_fit_test_export_transcribe_end_to_end(corpus, tmp_path):
    quiet = ["--trainer.enable_progress_bar", "false", "--data.num_workers", "0"]
    fit = run(
        ["fit", "--model.base_model", "random:micro", "--data.batch_size", "4",
         "--data.train_manifest", str(corpus["train"]), "--data.val_manifest", str(corpus["val"]),
         "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", *quiet],
        tmp_path,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    run_dir = tmp_path / "checkpoints" / "lightning_logs" / "version_0"
    ckpt = run_dir / "checkpoints" / "last.ckpt"  # written at the epoch's end
    assert torch.load(ckpt, weights_only=True)["global_step"] == 2
    [best] = (run_dir / "checkpoints").glob("epoch=0-step=2-*.ckpt")  # top-k by val_cer
    assert float(best.stem.split("val_cer=")[1]) >= 0

    # resume: the same command with --ckpt_path last continues from step 2 to the new limit,
    # in the same run folder (TensorBoard curves go on)
    resume = run(
        ["fit", "--data.batch_size", "4", "--data.train_manifest", str(corpus["train"]),
         "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2",
         "--ckpt_path", "last", *quiet],
        tmp_path,
    )  # fmt: skip
    assert resume.returncode == 0, resume.stderr
    assert not (run_dir.parent / "version_1").exists()
    state = torch.load(ckpt, weights_only=True)
    assert state["global_step"] == 4 and state["hyper_parameters"]["base_model"] == "random:micro"

    test = run(
        # retention (espeak-ng English, base and fine-tune) is tested in tests/training
        [
            "test",
            "--data.test_manifest",
            str(corpus["test"]),
            "--ckpt_path",
            str(ckpt),
            *quiet,
            "--model.retention_language",
            "",
        ],  # fmt: skip
        tmp_path,
    )
    assert test.returncode == 0, test.stderr
    predictions = Path(test.stdout.split("predictions: ")[1].split()[0])
    metrics = json.loads(Path(test.stdout.split("metrics:")[1].split()[0]).read_text())
    assert predictions.is_absolute() and predictions.parent.parent.name == "lightning_logs"
    with predictions.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    test_ids = [json.loads(line)["id"] for line in corpus["test"].read_text().splitlines()]
    assert [r["id"] for r in rows] == sorted(test_ids)
    assert metrics["n_utterances"] == 3 and metrics["base_model"] == "random:micro"
    # the report beside them; `test` of the fit's checkpoint continues its run folder, so the
    # learning curves come from the same logs
    report = Path(test.stdout.split("report:")[1].split()[0])
    assert report == predictions.parent / "report.md" == run_dir / "report.md"
    text = report.read_text(encoding="utf-8")
    for png in ("learning_curves.png", "cer_histogram.png", "cer_by_speaker.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text
        (run_dir / png).unlink()
    assert "val_cer: last" in text and sorted(test_ids)[0] in text  # worst utterances listed
    # `report` rebuilds it from the folder alone
    rebuilt = run(["report", str(run_dir), "--worst", "1"], tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"wrote {report}" in rebuilt.stdout and (run_dir / "cer_by_speaker.png").exists()
    assert "1. `" in report.read_text(encoding="utf-8")
    assert "2. `" not in report.read_text(encoding="utf-8")

    export = run(["export", str(ckpt), "model.pt"], tmp_path)
    assert export.returncode == 0 and "whisper.load_model" in export.stdout
    assert whisper.load_model(str(tmp_path / "model.pt")).dims.n_text_state == 64

    wavs = sorted(str(p) for p in (corpus["test"].parent / "wav").rglob("*.wav"))[:2]
    for model in ("model.pt", str(ckpt)):
        out = run(["transcribe", "--model", model, *wavs], tmp_path)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert [line.split("\t")[0] for line in lines] == wavs


def test_fit_help_documents_every_option(tmp_path):
    out = run(["fit", "--help"], tmp_path)
    assert out.returncode == 0
    for option in (
        "--model.base_model",
        "--model.freeze_encoder",
        "--model.lr_warmup_steps",
        "--data.train_manifest",
        "--data.target",
        "--trainer.max_steps",
        "--ckpt_path",
    ):
        assert option in out.stdout
    assert "random:<size>" in out.stdout  # the docstring reaches the help text


def test_print_config_shows_defaults(tmp_path):
    out = run(["fit", "--print_config"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "base_model: tiny" in out.stdout and "lr: 0.0001" in out.stdout


def test_augmentation_settings_are_flags_and_bad_ones_are_refused(tmp_path):
    flags = ["--data.augment.speed_prob", "0.5", "--model.spec_augment.prob", "0.3"]
    out = run(["fit", *flags, "--print_config"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "speed_prob: 0.5" in out.stdout and "prob: 0.3" in out.stdout
    bad = run(["fit", "--data.augment.noise_prob", "0.5", "--data.train_manifest", "x"], tmp_path)
    assert bad.returncode == 1 and "\nerror: augmentation setting noise_prob" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("name", recipe_names())
def test_shipped_recipes_parse_by_name_from_any_folder(name, tmp_path):
    out = run(["fit", "--config", name, "--print_config"], tmp_path)  # no recipe files in tmp_path
    assert out.returncode == 0, out.stderr
    assert "train_manifest: data/" in out.stdout


def test_an_older_checkouts_config_path_finds_the_shipped_recipe_and_an_unknown_name_is_named(
    tmp_path,
):
    out = run(["fit", "--config=configs/jvs_base.yaml", "--print_config"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "lr: 0.0001" in out.stdout
    bad = run(["fit", "--config", "jvs_bse", "--print_config"], tmp_path)
    assert bad.returncode != 0 and "jvs_bse" in bad.stderr


@pytest.mark.parametrize(
    ("cuda", "capability", "expected"),
    [(False, None, "32-true"), (True, (8, 0), "bf16-mixed"), (True, (7, 5), "16-mixed")],
)
def test_default_precision_follows_the_hardware(monkeypatch, cuda, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args: capability)
    assert default_precision() == expected


@pytest.mark.usefixtures("offline")
def test_download_failure_is_one_clear_line():
    with pytest.raises(SystemExit) as exit_:
        main(["transcribe", "--model", "tiny", "x.wav"])
    assert str(exit_.value.code).startswith("error: could not download the Whisper 'tiny'")
    assert "random:tiny" in str(exit_.value.code)


def test_test_of_a_checkpoint_needs_no_base_model_download(
    micro, corpus, tmp_path, monkeypatch, make_trainer, offline
):
    run = make_trainer(max_steps=1, logger=False)
    run.fit(micro, WhisperDataModule(str(corpus["train"]), batch_size=4, num_workers=0))
    ckpt = tmp_path / "from_tiny.ckpt"
    run.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)
    state["hyper_parameters"]["base_model"] = "tiny"  # as if fine-tuned from pretrained tiny
    torch.save(state, ckpt)

    monkeypatch.chdir(tmp_path)
    main(["test", "--data.test_manifest", str(corpus["test"]), "--data.num_workers", "0",
          "--ckpt_path", str(ckpt), "--trainer.enable_progress_bar", "false"])  # fmt: skip
    [metrics] = (tmp_path / "checkpoints").rglob("metrics.json")
    metrics = json.loads(metrics.read_text())
    assert metrics["base_model"] == "tiny"
    assert metrics["retention"] is None  # its base, needed for the before figure, is offline


def test_validate_without_a_val_manifest_says_which_flag(tmp_path):
    out = run(["validate", "--model.base_model", "random:micro"], tmp_path)
    assert out.returncode == 1
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("error: validate needs --data.val_manifest <file.jsonl>")
    )


def test_prepare_and_unknown_command_errors(tmp_path):
    out = run(["prepare", "jvs", "--root", str(tmp_path / "nowhere"), "--out", "x"], tmp_path)
    assert out.returncode != 0 and "no such folder" in out.stderr
    out = run(["frobnicate"], tmp_path)
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_demo_options_are_run_demos_parameters(monkeypatch, capsys):
    import functools

    import whisper_ft.recipes.demo

    calls = []

    @functools.wraps(whisper_ft.recipes.demo.run_demo)  # the signature the options come from
    def record(**kwargs):
        calls.append(kwargs)

    monkeypatch.setattr(whisper_ft.recipes.demo, "run_demo", record)
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--out", "elsewhere", "--max-steps", "3", "--base-model", "small"])
    assert exit_.value.code == 0
    assert calls == [{"out": "elsewhere", "max_steps": 3, "base_model": "small"}]
    with pytest.raises(SystemExit) as exit_:
        main(["demo"])  # run_demo's own defaults apply: nothing passed
    assert exit_.value.code == 0 and calls[1] == {}
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--long-form-s", "0"])  # no long-form stage
    assert exit_.value.code == 0 and calls[2] == {"long_form_s": 0.0}
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--max-steps", "0"])
    assert exit_.value.code == 2
    assert "--max-steps: expected a whole number of at least 1" in capsys.readouterr().err


def test_export_guards_are_flags_of_export_models_parameters(monkeypatch, capsys):
    import functools

    import whisper_ft.cli.commands

    calls = []

    @functools.wraps(whisper_ft.cli.commands.export_model)  # the signature the options come from
    def record(**kwargs):
        calls.append(kwargs)
        return Path(kwargs["out"])

    monkeypatch.setattr(whisper_ft.cli.commands, "export_model", record)
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help lines
    assert "--interpolate INTERPOLATE WiSE-FT weight of the fine-tune" in help_text
    assert "--average AVERAGE [AVERAGE ...]" in help_text and "--interpolate-base" in help_text
    with pytest.raises(SystemExit) as exit_:
        main(["export", "run.ckpt", "m.pt", "--interpolate", "0.4", "--average", "a.ckpt",
              "b.ckpt", "--interpolate-base", "base.pt"])  # fmt: skip
    assert exit_.value.code in (0, None)
    [kwargs] = calls
    assert kwargs["interpolate"] == 0.4 and kwargs["interpolate_base"] == "base.pt"
    assert kwargs["average"] == ["a.ckpt", "b.ckpt"] and kwargs["source"] == "run.ckpt"


def test_export_interpolate_outside_0_1_is_one_error_line(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(tmp_path / "run.ckpt"), str(tmp_path / "m.pt"), "--interpolate", "2"])
    assert str(exit_.value.code).startswith("error: --interpolate 2.0: give a weight in [0, 1]")
