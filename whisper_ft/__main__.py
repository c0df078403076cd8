"""`python -m whisper_ft …`: runs `cli.main`."""

from whisper_ft.cli.main import main

main()
