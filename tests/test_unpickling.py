"""No load path of the package runs code hidden in a checkpoint: a pickle whose unpickling would
run a command is refused with the package's one-line error, and the command never runs."""

import ast
import os
from pathlib import Path

import pytest
import torch

from whisper_ft.models.loading import ModelLoadError, export_checkpoint, load_base_model

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling it would create `marker` (any code could run in its place)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


@pytest.mark.parametrize("suffix", [".pt", ".ckpt"])
def test_a_malicious_checkpoint_is_refused_by_every_model_load(tmp_path, suffix):
    marker = tmp_path / "code_ran"
    path = tmp_path / f"evil{suffix}"
    torch.save({"dims": {}, "model_state_dict": {}, "payload": Payload(marker)}, path)
    with pytest.raises(ModelLoadError, match=f"{path}: cannot read this checkpoint"):
        load_base_model(str(path))
    if suffix == ".ckpt":
        with pytest.raises(ModelLoadError, match="cannot read this checkpoint"):
            export_checkpoint(path, tmp_path / "out.pt")
    assert not marker.exists()


def test_every_torch_load_in_the_package_and_benchmarks_is_weights_only():
    # The feature cache stores raw float16 rows and JSON (np.memmap, json): no unpickling there.
    calls = []
    for path in [*REPO.glob("whisper_ft/**/*.py"), *REPO.glob("benchmarks/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                safe = keywords.get("weights_only") == "True"
                calls.append((f"{path.relative_to(REPO)}:{node.lineno}", safe))
    assert calls and [where for where, safe in calls if not safe] == []
    pickles = [p for p in REPO.glob("whisper_ft/**/*.py") if "pickle.load" in p.read_text("utf-8")]
    assert pickles == []
