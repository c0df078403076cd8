"""benchmarks/RESULTS.md: each benchmark's rows land in its own table, not at the file's end."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from results_table import insert_rows  # noqa: E402

RESULTS = """# Throughput: a

| date | x |
| --- | ---: |
| d1 | 1 |

# Adaptation: b

| date | y |
| --- | ---: |
| d2 | 2 |

Text after the table.
"""


def test_rows_go_after_their_own_tables_last_row(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(RESULTS, encoding="utf-8")
    insert_rows(path, "# Throughput:", "unused", ["| d3 | 3 |\n"])
    insert_rows(path, "# Adaptation:", "unused", ["| d4 | 4 |\n", "| d5 | 5 |\n"])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[4:7] == ["| d1 | 1 |", "| d3 | 3 |", ""]
    assert lines[-5:] == ["| d2 | 2 |", "| d4 | 4 |", "| d5 | 5 |", "", "Text after the table."]


def test_a_missing_section_is_added_at_the_end_with_its_header(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(RESULTS, encoding="utf-8")
    header = "# Runtimes: c\n\n| date | z |\n| --- | ---: |\n"
    insert_rows(path, "# Runtimes:", header, ["| d6 | 6 |\n"])
    insert_rows(path, "# Runtimes:", header, ["| d7 | 7 |\n"])
    text = path.read_text(encoding="utf-8")
    assert text.startswith(RESULTS) and text.endswith(header + "| d6 | 6 |\n| d7 | 7 |\n")
    new = tmp_path / "new" / "RESULTS.md"
    insert_rows(new, "# Runtimes:", header, ["| d8 | 8 |\n"])
    assert new.read_text(encoding="utf-8") == header + "| d8 | 8 |\n"


def test_a_section_without_a_table_is_an_error_naming_it(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Runtimes: prose only\n\nno table yet\n", encoding="utf-8")
    with pytest.raises(ValueError, match="section '# Runtimes:' has no table"):
        insert_rows(path, "# Runtimes:", "", ["| x |\n"])


def test_longform_rows_fill_every_column_of_their_table(tmp_path):
    import longform

    row = {
        "model": "base",
        "reading": "pipeline",
        "recordings": 2,
        "sentences": 24,
        "kana_cer": 0.3051,
        "starts_within_0.3s": 0.25,
        "starts_within_0.5s": 0.5,
        "median_start_error_s": 0.53,
        "p90_start_error_s": 13.5,
        "dropped": 7,
        "looping_segments": 1,
        "repeated_segments": 0,
        "timed": True,
        "real_time_factor": 0.21,
    }
    result = {"date": "2026-12-03", "audio_s": 83.0, "device": "cpu", "command": "python x"}
    path = tmp_path / "RESULTS.md"
    insert_rows(path, "# Long-form:", longform.HEADER, [longform.table_row(result, row)])
    head, rule, line = path.read_text(encoding="utf-8").splitlines()[-3:]
    assert head.count("|") == rule.count("|") == line.count("|") == 17
    assert "| base | → OpenJTalk kana | 2 (83 s) | **0.305** | 0.25 | 0.50 | 0.53 | 13.50 |" in line
    assert "| 7/24 | 1 | 0 | yes | 0.21 | cpu | `python x` |" in line
