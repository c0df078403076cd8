"""Corpus preparation: one module per source, all writing `whisper_ft.manifest` lines through
one pipeline (`common`: skip record, target filler, manifest writer) and one split (`split`).

    jvs          JVS or any corpus in its layout
    synthetic    an offline corpus spoken by OpenJTalk
    espeak       sentences spoken by espeak-ng (the English retention set)
    lists        CSV, TSV (Common Voice, ReazonSpeech), a folder of transcribed audio
    huggingface  a local Hugging Face dataset (save_to_disk or audiofolder)
    merge        several manifests → one
    command      the `prepare` command line

Never imported by inference (transcribe, serve).
"""
