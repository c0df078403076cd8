"""The command line, `python -m whisper_ft <verb>`: the verb table, LightningCLI for
fit/validate/test, every other verb's front (options from a library function's signature) and
the one `error:` line. Nothing in the library imports this room."""


def main(argv: list[str] | None = None) -> None:
    """`whisper_ft.cli:main`, the entry point of installs made before the rooms."""
    from whisper_ft.cli.entry import main as run

    run(argv)
