import numpy as np
import pytest
import torch
import whisper.tokenizer
from whisper.audio import N_SAMPLES

from whisper_ft.data.collate import IGNORE_INDEX, Collator, decoder_tokens


def _items(tokenizer, texts):
    return [
        {
            "id": f"u{i}",
            "audio": np.ones(8000 * (i + 1), np.float32),
            "tokens": decoder_tokens(tokenizer, t),
            "text": t,
        }
        for i, t in enumerate(texts)
    ]


def test_decoder_input_starts_with_the_sot_sequence(ja_tokenizer):
    tokens = decoder_tokens(ja_tokenizer, "コンニチワ")
    assert tokens[:4] == [50258, 50266, 50359, 50363]
    assert ja_tokenizer.decode(tokens[4:]) == "コンニチワ"


def test_batch_shapes_padding_and_shifted_labels(ja_tokenizer):
    items = _items(ja_tokenizer, ["ア", "コンニチワセカイ"])
    batch = Collator(eot=ja_tokenizer.eot)(items)
    longest = len(items[1]["tokens"])
    assert longest % 8 != 0  # so the rounding below is visible
    width = -(-longest // 8) * 8
    assert batch["audio"].shape == (2, N_SAMPLES) and batch["audio"].dtype == torch.float32
    assert batch["audio"][0, :8000].eq(1).all() and batch["audio"][0, 8000:].eq(0).all()
    assert batch["dec_input_ids"].shape == batch["labels"].shape == (2, width)
    assert batch["ids"] == ["u0", "u1"] and batch["texts"] == ["ア", "コンニチワセカイ"]
    assert batch["skipped"] == []
    for row, item in enumerate(items):
        n = len(item["tokens"])
        inputs, labels = batch["dec_input_ids"][row], batch["labels"][row]
        assert inputs[:n].tolist() == item["tokens"]
        assert inputs[n:].eq(ja_tokenizer.eot).all()  # input padding = eot
        assert labels[: n - 1].tolist() == item["tokens"][1:]  # shifted left by one
        assert labels[n - 1] == ja_tokenizer.eot
        assert labels[n:].eq(IGNORE_INDEX).all()


def test_padding_id_comes_from_the_tokenizer_not_a_constant():
    english = whisper.tokenizer.get_tokenizer(False)
    assert english.eot == 50256
    items = _items(english, ["a", "a longer sentence"])
    batch = Collator(eot=english.eot)(items)
    assert (
        batch["dec_input_ids"][0, -1] == 50256
        and batch["labels"][0, len(items[0]["tokens"]) - 1] == 50256
    )


def test_audio_longer_than_30_s_is_trimmed(ja_tokenizer):
    item = _items(ja_tokenizer, ["ア"])[0] | {"audio": np.ones(N_SAMPLES + 500, np.float32)}
    short = _items(ja_tokenizer, ["イ"])[0] | {"audio": np.ones(16000, np.float32)}
    batch = Collator(eot=ja_tokenizer.eot)([item, short])
    assert batch["audio"].shape == (2, N_SAMPLES)
    assert batch["audio_lengths"].tolist() == [N_SAMPLES, 16000]  # real samples, capped at 30 s
    assert batch["audio"][1, 16000:].eq(0).all()


def test_the_batch_says_what_its_texts_spell(ja_tokenizer):
    items = _items(ja_tokenizer, ["ア"])
    assert Collator(eot=ja_tokenizer.eot)(items)["target"] == "kana"
    assert Collator(eot=ja_tokenizer.eot, target="text")(items)["target"] == "text"


def test_token_columns_round_up_to_the_multiple_and_labels_pad_with_ignore(ja_tokenizer):
    items = _items(ja_tokenizer, ["ア", "コンニチワセカイ"])
    longest = len(items[1]["tokens"])
    for multiple, width in [(8, -(-longest // 8) * 8), (5, -(-longest // 5) * 5), (1, longest)]:
        batch = Collator(eot=ja_tokenizer.eot, pad_to_multiple_of=multiple)(items)
        assert batch["dec_input_ids"].shape == batch["labels"].shape == (2, width)
        # the longest row: its eot label, then only padding in the extra columns
        assert batch["labels"][1, longest - 1] == ja_tokenizer.eot
        assert batch["labels"][1, longest:].eq(IGNORE_INDEX).all()
        assert batch["dec_input_ids"][1, longest:].eq(ja_tokenizer.eot).all()
    exact = _items(ja_tokenizer, ["ア"])[0] | {"tokens": list(range(16))}
    assert Collator(eot=ja_tokenizer.eot)([exact])["labels"].shape == (1, 16)  # no extra 8


def test_rounding_stops_at_the_decoders_context(ja_tokenizer):
    item = _items(ja_tokenizer, ["ア"])[0] | {"tokens": list(range(42))}
    assert Collator(eot=ja_tokenizer.eot)([item])["labels"].shape == (1, 48)
    assert Collator(eot=ja_tokenizer.eot, n_text_ctx=45)([item])["labels"].shape == (1, 45)


def test_pad_to_multiple_of_must_be_positive(ja_tokenizer):
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        Collator(eot=ja_tokenizer.eot, pad_to_multiple_of=0)


def test_unreadable_items_are_left_out_and_listed(ja_tokenizer):
    good = _items(ja_tokenizer, ["ア", "コンニチワセカイ"])
    bad1, bad2 = {"id": "bad1", "error": "unreadable: x.wav"}, {"id": "bad2", "error": "gone"}
    items = [good[0] | {"speaker": "spk1"}, bad1, good[1], bad2]  # good[1]: no speaker
    batch = Collator(eot=ja_tokenizer.eot)(items)
    assert batch["skipped"] == ["bad1", "bad2"]
    assert batch["ids"] == ["u0", "u1"] and batch["texts"] == ["ア", "コンニチワセカイ"]
    assert batch["speakers"] == ["spk1", ""]
    assert batch["audio"].shape[0] == batch["dec_input_ids"].shape[0] == 2
    assert batch["dec_input_ids"][1, : len(good[1]["tokens"])].tolist() == good[1]["tokens"]


def test_a_batch_of_only_unreadable_items_is_empty(ja_tokenizer):
    items = [{"id": "bad1", "error": "unreadable"}, {"id": "bad2", "error": "unreadable"}]
    batch = Collator(eot=ja_tokenizer.eot)(items)
    assert batch["skipped"] == ["bad1", "bad2"]
    assert batch["audio"].shape == (0, N_SAMPLES) and batch["audio"].dtype == torch.float32
    assert batch["audio_lengths"].shape == (0,)
    assert batch["dec_input_ids"].shape == batch["labels"].shape == (0, 0)
    assert batch["dec_input_ids"].dtype == batch["labels"].dtype == torch.long
    assert batch["ids"] == [] and batch["texts"] == [] and batch["speakers"] == []
