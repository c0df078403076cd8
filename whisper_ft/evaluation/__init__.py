"""The evaluation room: scores (kana, mora, orthographic, word, pipeline), a tested run's
predictions and its report. No Lightning; imports only the core."""
