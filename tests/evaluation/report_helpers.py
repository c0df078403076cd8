"""Helpers shared by the tests of the run report (`report`, `predictions`): a predictions.tsv
whose edits are counted by hand."""

import csv
from pathlib import Path

# (id, reference, hypothesis, speaker): edits by hand (jiwer's alignment)
ROWS = [
    ("u1", "アイウエオ", "アイカエオオ", "spk_a"),  # ウ→カ, +オ: 2 edits / 5
    ("u2", "カキク", "カキク", "spk_a"),  # 0 / 3
    ("u3", "サシスセソ", "サスセソ", "spk_b"),  # -シ: 1 / 5
    ("u4", "タチ", "", "spk_b"),  # -タ -チ: 2 / 2
]
# spk_a: (2 + 0) / (5 + 3) = 0.250; spk_b: (1 + 2) / (5 + 2) = 3/7 = 0.429
# corpus: 5 edits / 15 characters


def write_predictions(run_dir: Path, rows=ROWS) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "predictions.tsv"
    edits = {"u1": 2, "u2": 0, "u3": 1, "u4": 2}
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "reference", "hypothesis", "cer", "speaker"])
        for utterance_id, ref, hyp, speaker in rows:
            cer = edits.get(utterance_id, 0) / len(ref)
            writer.writerow([utterance_id, ref, hyp, f"{cer:.6f}", speaker])
    return path
