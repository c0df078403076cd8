import pytest

from whisper_ft.text import (
    hiragana_to_katakana,
    normalize,
    normalize_words,
    split_morae,
    to_kana,
)


@pytest.mark.parametrize(
    ("text", "kana"),
    [
        (
            "今日は良い天気ですね。こんにちは、世界！",
            "キョーワヨイテンキデスネ。コンニチワ、セカイ！",
        ),
        ("123円", "ヒャクニジューサンエン"),
        ("ABC株式会社", "エイビーシーカブシキガイシャ"),
        ("", ""),
        # needs onnxruntime (pyopenjtalk-plus[onnxruntime]); the rule fallback says ナニニン
        ("何人いますか。", "ナンニンイマスカ。"),
    ],
)
def test_to_kana_reads_as_openjtalk_pronounces(text, kana):
    assert to_kana(text) == kana


def test_hiragana_becomes_katakana_and_other_scripts_stay():
    assert hiragana_to_katakana("きょうはゝ晴れ、ABC") == "キョウハヽ晴レ、ABC"


def test_normalize_removes_punctuation_and_spaces_and_folds_width():
    assert normalize("きょうは、 いい　天気！ ＡＢＣ１２３ー。") == "キョウハイイ天気ABC123ー"
    assert normalize("「・」？") == ""


def test_normalize_words_segments_space_free_text_with_openjtalk():
    assert normalize_words("今日は いい天気です。") == "今日 ハ イイ 天気 デス"
    assert normalize_words("アイウ エオ") == normalize_words("アイウエオ")
    assert normalize_words("、。") == ""


def test_normalize_folds_half_width_katakana_and_full_width_digits():
    assert normalize("ｷｬｯﾄ ｶﾞ ２０２４年") == "キャットガ2024年"


@pytest.mark.parametrize(
    ("long_vowel", "expected"),
    [
        ("keep", "コーヒーキューケーラーメン"),
        ("drop", "コヒキュケラメン"),
        # the vowel of the kana before: the small ュ gives ウ; エイ/オウ are not produced
        ("vowel", "コオヒイキュウケエラアメン"),
    ],
)
def test_normalize_long_vowel_modes(long_vowel, expected):
    assert normalize("こーひー、キュー ケー。ラーメン", long_vowel=long_vowel) == expected


def test_long_vowel_as_vowel_repeats_and_keeps_marks_with_no_vowel_before():
    assert normalize("ゴーール", long_vowel="vowel") == "ゴオオル"
    # nothing before, ン, ッ, a kanji, a letter: no vowel to lengthen
    assert normalize("ーンーッー字ーAー", long_vowel="vowel") == "ーンーッー字ーAー"
    # the mark counts as a word character for WER in every mode
    assert normalize_words("トー キョー", long_vowel="vowel") == "トオキョオ"
    assert normalize_words("ー ア", long_vowel="drop") == "ア"


def test_normalize_rejects_an_unknown_long_vowel_mode():
    with pytest.raises(ValueError, match="long_vowel='long'"):
        normalize("コー", long_vowel="long")


@pytest.mark.parametrize(
    ("kana", "morae"),
    [
        ("キャット", ["キャ", "ッ", "ト"]),
        ("シンブン", ["シ", "ン", "ブ", "ン"]),
        ("コーヒー", ["コ", "ー", "ヒ", "ー"]),
        ("トウキョウ", ["ト", "ウ", "キョ", "ウ"]),
        ("ファイル", ["ファ", "イ", "ル"]),
        ("ヴァイオリン", ["ヴァ", "イ", "オ", "リ", "ン"]),
        ("クヮシ", ["クヮ", "シ"]),
        ("きょうはいっしょ", ["きょ", "う", "は", "い", "っ", "しょ"]),  # hiragana kept as is
        ("ャア", ["ャ", "ア"]),  # a glide at the start stands alone
        ("ッャンャーャ", ["ッ", "ャ", "ン", "ャ", "ー", "ャ"]),  # nothing to attach to
        ("キャァ", ["キャ", "ァ"]),  # one glide per mora
        # ヵ, ヶ are counters (一ヶ月): they neither join a kana nor take a glide
        ("ゴヶ月ヵャ", ["ゴ", "ヶ", "月", "ヵ", "ャ"]),
        ("ABC1日ヒ", ["A", "B", "C", "1", "日", "ヒ"]),
        ("ア イ", ["ア", "イ"]),
        ("", []),
    ],
)
def test_split_morae(kana, morae):
    assert split_morae(kana) == morae
    assert "".join(morae) == kana.replace(" ", "")


def test_to_kana_reads_text_longer_than_openjtalks_buffer_in_pieces():
    # 9,000 katakana (27 kB) is past what pyopenjtalk.g2p takes in one call ("Input text is
    # too long after normalization"): a long recording's transcript, or a looping hypothesis.
    assert to_kana("ア" * 9000) == "ア" * 9000
    sentences = ["今日は良い天気です。", "明日は雨が降るでしょう！"] * 60  # 1,320 characters
    assert to_kana("".join(sentences)) == "".join(to_kana(s) for s in sentences)


def test_long_text_is_cut_after_sentence_ends_and_rejoins_exactly():
    from whisper_ft.text import _pieces

    text = "アイウ。" * 10 + "エ" * 25
    pieces = _pieces(text, 10)
    assert "".join(pieces) == text
    assert all(len(p) <= 10 for p in pieces)
    assert pieces[:2] == ["アイウ。アイウ。", "アイウ。アイウ。"]  # cut after 。, not mid-sentence
    assert pieces[-3:] == ["エ" * 10, "エ" * 10, "エ" * 5]  # no sentence end: cut at the size
