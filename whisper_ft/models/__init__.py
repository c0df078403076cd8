"""The models room: a model from any source (a Whisper name, the packaged weights, .pt, .ckpt,
CTranslate2 and Hugging Face folders, `random:<size>`), its trainable parts and LoRA,
weight-space merging (WiSE-FT interpolation, checkpoint averaging: `merging`) and export to
those formats. Imports only the core."""
