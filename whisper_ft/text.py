"""Targets and scoring text: katakana conversion (pyopenjtalk), normalisation for CER/WER,
and the split of kana into morae for the mora error rate."""

import unicodedata
from functools import lru_cache
from typing import Literal

LongVowel = Literal["keep", "drop", "vowel"]

# Hiragana letters and iteration marks sit exactly 0x60 below their katakana counterparts.
_HIRAGANA_TO_KATAKANA = {c: c + 0x60 for c in [*range(0x3041, 0x3097), 0x309D, 0x309E]}

_LONG_VOWEL_MARK = "ー"

# The vowel each kana ends in, for long_vowel="vowel". Small kana carry the vowel of the mora
# they end (キュ → ウ, ファ → ア). ン, ッ and ー have none: a ー after them stays.
_VOWEL_OF = {
    kana: vowel
    for vowel, row in {
        "ア": "アァカガサザタダナハバパマヤャラワヮヵヷ",
        "イ": "イィキギシジチヂニヒビピミリヰヸ",
        "ウ": "ウゥクグスズツヅヌフブプムユュルヴ",
        "エ": "エェケゲセゼテデネヘベペメレヱヹヶ",
        "オ": "オォコゴソゾトドノホボポモヨョロヲヺ",
    }.items()
    for kana in row
}

# Small kana that form one mora with the kana before them (キャ, ファ, クヮ). ヵ and ヶ are not
# among them: they stand for the counter ka/ke (一ヶ月), never a glide.
_GLIDES = frozenset("ァィゥェォャュョヮ")
# Full-size kana a glide can attach to; ッ, ン, ー, ヵ, ヶ and small kana are not.
_GLIDE_BASES = frozenset(_VOWEL_OF) - _GLIDES - frozenset("ヵヶ")


@lru_cache(maxsize=65536)  # corpora repeat sentences (JVS: 100 in every speaker's parallel100)
def to_kana(text: str) -> str:
    """Katakana pronunciation of Japanese text, as OpenJTalk reads it.

    `pyopenjtalk.g2p(text, kana=True)`: は→ワ, long vowels as ー, Latin letters and numbers
    read out (ABC → エイビーシー), punctuation kept, emoji passed through unchanged.
    OpenJTalk refuses an input that grows past its buffer once normalised ("Input text is too
    long after normalization", at about 16 kB: a long recording's transcript, or a looping
    hypothesis); such text is read in pieces cut after sentence ends (。！？ and newlines),
    else at `_KANA_PIECE` characters, and the readings joined.
    """
    import pyopenjtalk  # imported here: loading its dictionary costs time and few callers need it

    if len(text) <= _KANA_PIECE:
        return pyopenjtalk.g2p(text, kana=True)
    return "".join(pyopenjtalk.g2p(piece, kana=True) for piece in _pieces(text, _KANA_PIECE))


_KANA_PIECE = 1000  # characters: 3 kB of kanji, well inside OpenJTalk's buffer after reading out
_SENTENCE_ENDS = frozenset("。！？!?\n")


def _pieces(text: str, size: int) -> list[str]:
    """`text` cut into pieces of at most `size` characters, after a sentence end where one
    falls in the piece, else at `size`; joined they are `text`."""
    pieces = []
    while len(text) > size:
        cut = max((i + 1 for i in range(size) if text[i] in _SENTENCE_ENDS), default=size)
        pieces.append(text[:cut])
        text = text[cut:]
    return [*pieces, text] if text else pieces


def hiragana_to_katakana(text: str) -> str:
    return text.translate(_HIRAGANA_TO_KATAKANA)


def _is_separator_or_punctuation(char: str) -> bool:
    return char.isspace() or unicodedata.category(char)[0] in "PZ"


def _fold(text: str, fold_kana: bool = True) -> str:
    text = unicodedata.normalize("NFKC", text)
    return hiragana_to_katakana(text) if fold_kana else text


def _strip(text: str) -> str:
    return "".join(c for c in text if not _is_separator_or_punctuation(c))


def _long_vowels(text: str, long_vowel: LongVowel) -> str:
    if long_vowel == "keep":
        return text
    if long_vowel == "drop":
        return text.replace(_LONG_VOWEL_MARK, "")
    if long_vowel != "vowel":
        raise ValueError(f"long_vowel={long_vowel!r}: use 'keep', 'drop' or 'vowel'")
    out: list[str] = []
    for char in text:
        # The previous output character, not the input one, so that ーー repeats the vowel.
        if char == _LONG_VOWEL_MARK and out and out[-1] in _VOWEL_OF:
            char = _VOWEL_OF[out[-1]]
        out.append(char)
    return "".join(out)


def normalize(text: str, long_vowel: LongVowel = "keep", fold_kana: bool = True) -> str:
    """Text as scored for CER: NFKC, hiragana→katakana, punctuation and whitespace removed.

    NFKC folds full-width letters and digits (ＡＢＣ１２３ → ABC123) and half-width katakana
    (ｷｬｯﾄ → キャット). `、。！？「」・` and spaces go; letters, digits, kanji and symbols stay.

    long_vowel: what becomes of the long-vowel mark ー, the one spelling choice on which
        OpenJTalk's kana (トーキョー) and many other transcripts disagree:
        "keep" leaves it; "drop" removes it (トーキョー → トキョ); "vowel" writes the vowel of
        the kana before it (コーヒー → コオヒイ, キュー → キュウ, ケー → ケエ). "vowel" does not
        turn ケエ into ケイ or トオ into トウ: the エイ/オウ spellings stay different from
        long vowels. A ー after ン, ッ, a non-kana character or at the start is kept.
    fold_kana: turn hiragana into katakana (kana targets, where the script is not scored);
        False for orthography, where りんご and リンゴ are different spellings.
    """
    return _long_vowels(_strip(_fold(text, fold_kana)), long_vowel)


def normalize_words(text: str, long_vowel: LongVowel = "keep", fold_kana: bool = True) -> str:
    """Japanese text as scored for WER: `normalize`d (spaces removed), then split into words by
    OpenJTalk's segmentation (`pyopenjtalk.run_frontend`), joined by single spaces.

    Spaces a transcript happens to contain do not count: both sides are segmented by the same
    tool from space-free text, so アイウエオ and アイウ エオ have the same words. OpenJTalk's
    dictionary is orthographic: it splits kanji/kana text into words (今日 は いい 天気 です)
    but usually keeps a run of katakana it does not know as one word.
    """
    flat = normalize(text, fold_kana=False)  # segmented as written: hiragana guides OpenJTalk
    if not flat:
        return ""
    import pyopenjtalk  # imported here: loading its dictionary costs time and few callers need it

    words = (normalize(w["string"], long_vowel, fold_kana) for w in pyopenjtalk.run_frontend(flat))
    return " ".join(w for w in words if w)


def split_morae(kana: str) -> list[str]:
    """Morae of a kana string (katakana or hiragana), for the mora error rate.

    A small ャュョァィゥェォヮ joins the full-size kana before it (キャ, ファ, ヴァ); one with
    none before it (at the start, after ッ, ン, ー or another glide) is a mora of its own.
    ッ (sokuon), ン (hatsuon) and ー (chōon) are morae of their own, as are ヵ and ヶ.
    Every other character (kanji, letters, digits, symbols) is one unit; whitespace is skipped.
    Apply after `normalize`: キャット → [キャ, ッ, ト], コーヒー → [コ, ー, ヒ, ー].
    """
    morae: list[str] = []
    for char in kana:
        if char.isspace():
            continue
        previous = hiragana_to_katakana(morae[-1]) if morae else ""
        if hiragana_to_katakana(char) in _GLIDES and previous in _GLIDE_BASES:
            morae[-1] += char
        else:
            morae.append(char)
    return morae
