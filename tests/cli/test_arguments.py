import argparse
from typing import Literal

import pytest

from whisper_ft.cli.arguments import (
    add_options,
    call,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    with_flags,
)


@pytest.mark.parametrize(
    ("parse", "good", "bad", "message"),
    [
        (positive_int, {"1": 1, "16": 16}, ["0", "-1", "1.5", "x", ""], "at least 1"),
        (non_negative_int, {"0": 0, "10": 10}, ["-1", "2.0", "x"], "0 or more"),
        (positive_float, {"0.25": 0.25, "30": 30.0}, ["0", "-2", "nan", "x"], "above 0"),
        (non_negative_float, {"0": 0.0, "10.5": 10.5}, ["-0.1", "nan", "x"], "0 or more"),
    ],
)
def test_values_are_checked_while_parsing(parse, good, bad, message):
    for text, value in good.items():
        assert parse(text) == value and type(parse(text)) is type(value)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError) as error:
            parse(text)
        assert repr(text) in str(error.value)
        assert message in str(error.value) or "expected a number" in str(error.value)


def test_a_bad_value_is_one_usage_error_naming_the_flag(capsys):
    parser = argparse.ArgumentParser(prog="python -m whisper_ft serve")
    parser.add_argument("--max-batch", type=positive_int, default=8)
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-batch", "0"])
    assert "argument --max-batch: expected a whole number of at least 1, got '0'" in (
        capsys.readouterr().err
    )


def job(
    root: str,
    out: str,
    *,
    speakers: list[str] | None = None,
    seed: int = 0,
    target: Literal["kana", "text"] = "kana",
    rebuild: bool = False,
) -> tuple:
    return root, out, speakers, seed, target, rebuild


def job_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="job")
    add_options(
        parser,
        job,
        help={n: n for n in ("root", "out", "speakers", "seed", "target", "rebuild")},
        positional=("root",),
        flags={"out": "--out-dir"},
    )
    return parser


def test_options_come_from_the_signature_and_defaults_stay_there():
    parser = job_parser()
    args = parser.parse_args(["r", "--out-dir", "o", "--speakers", "a", "b", "--seed", "3"])
    assert call(job, args) == ("r", "o", ["a", "b"], 3, "kana", False)
    # Left out, an option is absent: the function's own default applies.
    assert call(job, parser.parse_args(["r", "--out-dir", "o"])) == (
        "r",
        "o",
        None,
        0,
        "kana",
        False,
    )
    assert call(job, parser.parse_args(["r", "--out-dir", "o", "--rebuild"]))[-1] is True
    assert "(default: 0)" in parser.format_help() and "{kana,text}" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["r"])  # --out-dir: no default, so required
    with pytest.raises(SystemExit):
        parser.parse_args(["r", "--out-dir", "o", "--target", "kanji"])


def test_with_flags_turns_parameter_names_into_the_flags_given():
    flags = job_parser().get_default("flags")
    assert flags == {
        "root": "root",
        "out": "--out-dir",
        "speakers": "--speakers",
        "seed": "--seed",
        "target": "--target",
        "rebuild": "--rebuild",
    }
    message = "`out` must be a folder; try another `seed` (out and seed unquoted stay)"
    assert with_flags(message, flags) == (
        "--out-dir must be a folder; try another --seed (out and seed unquoted stay)"
    )
