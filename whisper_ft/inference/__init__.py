"""The inference room: the transcription engine and the offline transcribe run with its output
folder. Imports models, evaluation and the core; never data, training or corpora, and never
Lightning."""
