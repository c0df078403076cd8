"""whisper-ft: fine-tune OpenAI Whisper with PyTorch Lightning (Japanese katakana targets first)."""

__version__ = "0.1.0"
