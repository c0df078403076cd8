from whisper_ft.cli import main

main()
