"""Value types for the argparse commands: numbers checked while the command line is parsed, so
a bad value is one usage error naming its flag, before any model or data is loaded."""

import argparse


def positive_int(value: str) -> int:
    """A whole number of at least 1 (`--workers`, `--batch-size`, …)."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value!r}")
    return int(value)


def non_negative_int(value: str) -> int:
    """A whole number of 0 or more (`--worst`)."""
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, got {value!r}")
    return int(value)


def positive_float(value: str) -> float:
    """A number above 0 (limits in MiB or seconds)."""
    number = _float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value!r}")
    return number


def non_negative_float(value: str) -> float:
    """A number of 0 or more (waiting times)."""
    number = _float(value)
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, got {value!r}")
    return number


def _float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
