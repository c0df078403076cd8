"""`python -m whisper_ft …`: runs `cli.entry.main`."""

from whisper_ft.cli.entry import main

main()
