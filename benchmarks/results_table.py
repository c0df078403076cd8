"""Rows into their own table of RESULTS.md: each benchmark owns one section (`# Title` …), and
a run's rows go after the last row of that section's first table, whatever sections follow.

    insert_rows(RESULTS, "# Runtimes:", HEADER, rows)
"""

from pathlib import Path


def insert_rows(path: Path, heading: str, header: str, rows: list[str]) -> None:
    """Add `rows` (markdown table lines, each ending in a newline) to the first table under the
    line starting with `heading`; the section (`header`: its heading, text and table head) is
    added at the end of the file the first time."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if not any(line.startswith(heading) for line in text.splitlines()):
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + header
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("| ---")), None)
    if end is None:
        raise ValueError(f"{path}: the section {heading!r} has no table to add rows to")
    while end + 1 < len(lines) and lines[end + 1].startswith("|"):
        end += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines[: end + 1] + rows + lines[end + 1 :]), encoding="utf-8")
