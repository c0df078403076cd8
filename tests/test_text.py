import pytest

from whisper_ft.text import hiragana_to_katakana, normalize, normalize_words, to_kana


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


def test_normalize_words_keeps_word_boundaries():
    assert normalize_words("Hello,  world!  こんにちは。") == "Hello world コンニチハ"
    assert normalize_words("、。") == ""
