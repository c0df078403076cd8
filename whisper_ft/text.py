"""Targets and scoring text: katakana conversion (pyopenjtalk) and normalisation for CER/WER."""

import unicodedata

# Hiragana letters and iteration marks sit exactly 0x60 below their katakana counterparts.
_HIRAGANA_TO_KATAKANA = {c: c + 0x60 for c in [*range(0x3041, 0x3097), 0x309D, 0x309E]}


def to_kana(text: str) -> str:
    """Katakana pronunciation of Japanese text, as OpenJTalk reads it.

    `pyopenjtalk.g2p(text, kana=True)`: は→ワ, long vowels as ー, Latin letters and numbers
    read out (ABC → エイビーシー), punctuation kept, emoji passed through unchanged.
    """
    import pyopenjtalk  # imported here: loading its dictionary costs time and only prepare needs it

    return pyopenjtalk.g2p(text, kana=True)


def hiragana_to_katakana(text: str) -> str:
    return text.translate(_HIRAGANA_TO_KATAKANA)


def _is_separator_or_punctuation(char: str) -> bool:
    return char.isspace() or unicodedata.category(char)[0] in "PZ"


def normalize(text: str) -> str:
    """Text as scored for CER: NFKC, hiragana→katakana, punctuation and whitespace removed.

    `、。！？「」・` and spaces go; letters, digits, the long-vowel mark ー and symbols stay.
    """
    text = hiragana_to_katakana(unicodedata.normalize("NFKC", text))
    return "".join(c for c in text if not _is_separator_or_punctuation(c))


def normalize_words(text: str) -> str:
    """Text as scored for WER: like `normalize`, but runs of whitespace become one space.

    Words are what whitespace separates. Japanese is written without spaces, so a Japanese
    utterance is one word and WER on it is the utterance (sentence) error rate.
    """
    text = hiragana_to_katakana(unicodedata.normalize("NFKC", text))
    words = ("".join(c for c in w if not _is_separator_or_punctuation(c)) for w in text.split())
    return " ".join(w for w in words if w)
