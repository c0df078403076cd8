import argparse

import pytest

from whisper_ft.arguments import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
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
