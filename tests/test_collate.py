import numpy as np
import torch
import whisper.tokenizer
from whisper.audio import N_SAMPLES

from whisper_ft.collate import IGNORE_INDEX, Collator, decoder_tokens


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
    assert batch["audio"].shape == (2, N_SAMPLES) and batch["audio"].dtype == torch.float32
    assert batch["audio"][0, :8000].eq(1).all() and batch["audio"][0, 8000:].eq(0).all()
    assert batch["dec_input_ids"].shape == batch["labels"].shape == (2, longest)
    assert batch["ids"] == ["u0", "u1"] and batch["texts"] == ["ア", "コンニチワセカイ"]
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
    assert Collator(eot=ja_tokenizer.eot)([item])["audio"].shape == (1, N_SAMPLES)
