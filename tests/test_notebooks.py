"""The notebooks, executed end to end as CI runs them: smoke mode (`WHISPER_FT_SMOKE=1`: the
synthetic corpus, a random micro Whisper, the CPU, offline), each in its own kernel whose
working folder is a temporary one, so nothing is written into the repository."""

import json
import os
from pathlib import Path

import pytest
import torch
import whisper

from whisper_ft.manifest import read_manifest

nbformat = pytest.importorskip(
    "nbformat", reason="notebook tests need nbformat (pip install -r requirements-optional.txt)"
)
nbclient = pytest.importorskip(
    "nbclient", reason="notebook tests need nbclient (pip install -r requirements-optional.txt)"
)
pytest.importorskip(
    "ipykernel", reason="notebook tests need ipykernel (pip install -r requirements-optional.txt)"
)

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def execute(name: str, work: Path, monkeypatch: pytest.MonkeyPatch):
    """Run every cell of notebooks/<name> in smoke mode with `work` as the kernel's working
    folder and WHISPER_FT_WORK; a failing cell raises CellExecutionError with its traceback.
    The kernel is ipykernel's own `python3`, which runs this interpreter (sys.executable)."""
    # A `python3` kernelspec in the user's ~/.local/share/jupyter would win over the one
    # ipykernel installed beside this interpreter, and may run another Python.
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(work / "jupyter"))
    monkeypatch.setenv("WHISPER_FT_SMOKE", "1")
    # The package on the path, as an install would put it: the notebook imports it.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.getenv("PYTHONPATH")]))
    )
    monkeypatch.setenv("WHISPER_FT_WORK", str(work))
    notebook = nbformat.read(REPO / "notebooks" / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    )
    client.execute()
    return notebook


def tagged(notebook, tag: str):
    return next(cell for cell in notebook.cells if tag in cell.metadata.get("tags", []))


def printed(cell) -> str:
    return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")


def images(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebooks_are_committed_clean_and_explained(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    cells = notebook.cells
    assert cells[0].cell_type == "markdown"
    for before, cell in zip(cells, cells[1:], strict=False):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id
            assert before.cell_type == "markdown", f"{cell.id}: say what it does above it"
    # papermill injects settings after the cell tagged "parameters"
    assert "SMOKE =" in tagged(notebook, "parameters").source


def test_colab_notebook_runs_every_step_in_smoke_mode(tmp_path, monkeypatch):
    notebook = execute("finetune_jvs_colab.ipynb", tmp_path, monkeypatch)
    run_dir = tmp_path / "checkpoints" / "smoke" / "lightning_logs" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"

    # Re-running the fit cell found last.ckpt and went on from step 4 to step 6.
    assert f"resuming from {last}" in printed(tagged(notebook, "resume"))
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 6

    curves = printed(tagged(notebook, "curves"))
    # 6 steps, logged as steps 0-5 (an uninterrupted fit's numbering: the resume counts each
    # step once; before the epoch-end fix of issue 12 the resumed steps were logged one later)
    assert "train_loss" in curves and "val_cer" in curves and "(step 5)" in curves
    assert "(step 6)" not in curves
    assert images(tagged(notebook, "curves")) == 1
    assert (run_dir / "learning_curves.png").read_bytes().startswith(b"\x89PNG")

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_utterances"] == 3 and metrics["base_model"] == "random:micro"
    assert f"test CER {metrics['cer']:.3f}" in printed(tagged(notebook, "evaluate"))
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "## Worst utterances" in report and "REF  " in report
    assert images(tagged(notebook, "evaluate")) == 3  # curves, CER histogram, CER by speaker
    assert (run_dir / "cer_histogram.png").is_file() and (run_dir / "cer_by_speaker.png").is_file()

    exported = tmp_path / "checkpoints" / "smoke" / "smoke.pt"
    assert whisper.load_model(str(exported), device="cpu").dims.n_text_state == 64

    corpus = tmp_path / "data" / "synthetic"
    transcribed = printed(tagged(notebook, "transcribe"))
    for utterance in read_manifest(corpus / "test.jsonl")[:1]:
        assert f"{utterance.audio_path(corpus)}\t" in transcribed
        assert f"reference {utterance.id}: {utterance.kana}" in transcribed


def test_quickstart_notebook_transcribes_and_evaluates_an_exported_model(tmp_path, monkeypatch):
    notebook = execute("quickstart.ipynb", tmp_path, monkeypatch)
    exported = tmp_path / "checkpoints" / "quickstart_smoke" / "micro.pt"
    assert exported.is_file()

    corpus = tmp_path / "data" / "synthetic"
    transcribed = printed(tagged(notebook, "transcribe"))
    for utterance in read_manifest(corpus / "test.jsonl")[:1]:
        path = utterance.audio_path(corpus)
        assert f"{path}\t" in transcribed  # the command line
        assert f"{path.name}: " in transcribed  # the Python API

    (metrics_path,) = (tmp_path / "checkpoints" / "quickstart_eval").glob("**/metrics.json")
    metrics = json.loads(metrics_path.read_text())
    assert metrics["base_model"] == str(exported) and metrics["n_utterances"] == 3
    assert metrics["checkpoint"] is None  # the .pt itself was evaluated, no Lightning checkpoint
    assert f"CER {metrics['cer']:.3f}" in printed(tagged(notebook, "evaluate"))
    assert "## Worst utterances" in (metrics_path.parent / "report.md").read_text(encoding="utf-8")
    assert images(tagged(notebook, "evaluate")) == 2  # no training curves: CER histogram, speakers
