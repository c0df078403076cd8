"""Command-line options made from typed signatures, and value types checked while parsing.

    add_options(parser, prepare_jvs, help={...})   one option per parameter: flag, type,
                                                   choices, nargs and default from the signature
    call(prepare_jvs, args)                        the function called with what was given

A function's signature is the one place its settings and defaults are written: an option
left out is absent from the parsed arguments (`argparse.SUPPRESS`), so the function's own
default applies, and the help shows it. Value types (`positive_int`, …) make a bad number one
usage error naming its flag, before any model or data is loaded.
"""

import argparse
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal


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


def flag(name: str) -> str:
    """The command-line flag of parameter `name`: `val_speakers` → `--val-speakers`."""
    return "--" + name.replace("_", "-")


def add_options(
    parser: argparse.ArgumentParser,
    function: Callable,
    *,
    help: dict[str, str],  # noqa: A002 (argparse's own word)
    flags: dict[str, str] | None = None,
    positional: tuple[str, ...] = (),
    value_types: dict[str, Callable[[str], Any]] | None = None,
) -> None:
    """Add an option to `parser` for each parameter of `function` named in `help`.

    The flag is `flag(name)` (or `flags[name]`; a name in `positional` is a positional
    argument, shown as `flags[name]` if given). The annotation gives the type
    (`value_types[name]` overrides it): `Literal` choices, `list`/`tuple` nargs="+", `bool`
    a switch. A parameter without a default is required; one with a default is left out of
    the parsed arguments unless given, and its help ends with the default.
    """
    hints = typing.get_type_hints(function)
    named = dict(parser.get_default("flags") or {})  # parameter → flag, for `with_flags`
    parameters = inspect.signature(function).parameters
    for name, text in help.items():
        parameter = parameters[name]
        kind = _without_none(hints.get(name, str))
        options: dict[str, Any] = {"help": text, "default": argparse.SUPPRESS}
        if kind is bool:
            options["action"] = "store_true"
        else:
            element = _element(kind)
            if element is not kind:
                options["nargs"] = "+"
            if typing.get_origin(element) is Literal:
                options["choices"] = typing.get_args(element)
            else:
                options["type"] = (value_types or {}).get(name) or _scalar(element)
        required = parameter.default is inspect.Parameter.empty
        if not required and parameter.default is not None and parameter.default is not False:
            default = parameter.default
            shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else default
            options["help"] = f"{text} (default: {shown})"
        if name in positional:
            option = (flags or {}).get(name, name)
            parser.add_argument(name, metavar=option, **options)
        else:
            option = (flags or {}).get(name, flag(name))
            parser.add_argument(option, dest=name, required=required, **options)
        named[name] = option
    parser.set_defaults(flags=named)


def with_flags(message: str, flags: dict[str, str]) -> str:
    """A library error in the command line's words: each `parameter` (as library errors
    write them, in backticks) becomes its flag (`flags`: parameter → flag)."""
    for name, option in flags.items():
        message = message.replace(f"`{name}`", option)
    return message


def call(function: Callable, args: argparse.Namespace, **values: Any) -> Any:
    """`function` called with the parsed arguments that are its parameters (those given),
    and `values`."""
    parameters = inspect.signature(function).parameters
    given = {name: value for name, value in vars(args).items() if name in parameters}
    return function(**(given | values))


def _without_none(kind: Any) -> Any:
    """`X | None` → X; `str | Path` → str."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        rest = [k for k in typing.get_args(kind) if k is not type(None)]
        if Path in rest and str in rest:
            return str
        kind = rest[0] if len(rest) == 1 else rest[0]
    return kind


def _element(kind: Any) -> Any:
    """The element type of `list[X]`, `tuple[X, ...]`; `kind` itself otherwise."""
    if typing.get_origin(kind) in (list, tuple):
        return _without_none(typing.get_args(kind)[0])
    return kind


def _scalar(kind: Any) -> Callable[[str], Any]:
    return kind if kind in (int, float) else str
