"""The evaluation room: scores (kana, mora, orthographic, word, pipeline), a tested run's
predictions and its report, and retention (`retention`: WER in a language the model was not
fine-tuned on, before and after). No Lightning; imports only the core."""
