"""The seed recipe, rewritten faithfully: the baseline that benchmarks/throughput.py measures.

The recipe is the well-known JVS fine-tuning article built on openai/whisper discussion #64:

    Dataset.__getitem__   load audio → pad_or_trim to 30 s → log_mel_spectrogram on the CPU,
                          pyopenjtalk.g2p(text, kana=True), tokens = SOT sequence + kana,
                          labels = tokens[1:] + [eot]                     (DataLoader workers)
    collator              labels padded with -100, dec_input_ids with a hard-coded 50257,
                          mels stacked
    training step         with torch.no_grad(): audio_features = model.encoder(mel)
                          out = model.decoder(dec_input_ids, audio_features)
                          CrossEntropyLoss(ignore_index=-100); AdamW with the recipe's
                          no_decay = ["bias", "LayerNorm.weight"] groups (a name test that
                          matches no Whisper LayerNorm), linear warm-up then decay;
                          Trainer(precision=16): fp16 autocast + GradScaler on CUDA
    evaluation            model.decode(mel batch of 2, DecodingOptions(language="ja",
                          without_timestamps=True)) over the val set

Its flaws are kept on purpose: they are what the baseline costs. Two substitutions: audio is
read with soundfile and resampled with soxr, where the article used torchaudio (not a
dependency of this project; the synthetic corpus is 16 kHz already, so nothing is resampled);
and the recipe's Lightning module is written as a plain loop with the same arithmetic. The loop
pays none of Lightning's per-step overhead, so the baseline is, if anything, flattered. fp32 on
the CPU, where fp16 autocast does not exist. It imports nothing from whisper_ft: it is the
independent baseline.
"""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyopenjtalk
import soundfile as sf
import soxr
import torch
import whisper
from torch.utils.data import DataLoader, Dataset
from whisper.audio import SAMPLE_RATE
from whisper.model import Whisper
from whisper.tokenizer import Tokenizer

PAD_TOKEN_ID = 50257  # the recipe's literal "eot" padding (right for multilingual models only)
IGNORE_INDEX = -100  # label padding the loss skips
LEARNING_RATE = 5e-4  # the recipe's Config: learning_rate
WEIGHT_DECAY = 0.01  # weight_decay
ADAM_EPSILON = 1e-8  # adam_epsilon
WARMUP_STEPS = 2  # warmup_steps
NUM_WORKERS = 2  # num_worker of the training DataLoader (evaluation uses none)
EVAL_BATCH_SIZE = 2  # the article's evaluation loop
NO_DECAY = ("bias", "LayerNorm.weight")  # the recipe's name test (Whisper's are "*_ln.weight")


def read_pairs(manifest: str | Path) -> list[tuple[str, Path, str]]:
    """(id, audio path, text) per line of a JSONL manifest; the recipe read JVS's transcript
    files into the same triples. Relative audio paths start at the manifest's folder."""
    manifest = Path(manifest)
    pairs = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            pairs.append((item["id"], manifest.parent / item["audio"], item["text"]))
    return pairs


def load_wave(path: str | Path, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """The recipe's `load_wave` (torchaudio.load + Resample) with soundfile and soxr.

    Returns
    -------
    torch.Tensor, shape = (channels, n_samples), float32
    """
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != sample_rate:
        data = soxr.resample(data, rate, sample_rate)
    return torch.from_numpy(np.ascontiguousarray(data.T))


class SeedSpeechDataset(Dataset):
    """The recipe's dataset: everything per item, in the DataLoader workers.

    Items are `{"input_ids": torch.Tensor (n_mels, 3000) log-mel, "labels": list[int],
    "dec_input_ids": list[int]}`.
    """

    def __init__(
        self, pairs: list[tuple[str, Path, str]], tokenizer: Tokenizer, n_mels: int = 80
    ) -> None:
        self.pairs, self.tokenizer, self.n_mels = pairs, tokenizer, n_mels

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        _, audio_path, text = self.pairs[index]
        audio = load_wave(audio_path, sample_rate=SAMPLE_RATE)
        audio = whisper.pad_or_trim(audio.flatten())
        mel = whisper.log_mel_spectrogram(audio, self.n_mels)
        kana = pyopenjtalk.g2p(text, kana=True)
        tokens = [*self.tokenizer.sot_sequence_including_notimestamps] + self.tokenizer.encode(kana)
        labels = tokens[1:] + [self.tokenizer.eot]
        return {"input_ids": mel, "labels": labels, "dec_input_ids": tokens}


def seed_collate(items: list[dict]) -> dict:
    """The recipe's `WhisperDataCollatorWhithPadding`: both token lists padded to the longest
    in the batch, labels with -100 and inputs with the literal 50257.

    Returns `{"input_ids": (B, n_mels, 3000) float32, "labels": (B, L) int64,
    "dec_input_ids": (B, L) int64}`.
    """
    input_ids = torch.concat([item["input_ids"][None, :] for item in items])
    labels = [item["labels"] for item in items]
    dec_input_ids = [item["dec_input_ids"] for item in items]
    width = max([len(x) for x in labels] + [len(x) for x in dec_input_ids])
    labels = [np.pad(x, (0, width - len(x)), constant_values=IGNORE_INDEX) for x in labels]
    dec_input_ids = [
        np.pad(x, (0, width - len(x)), constant_values=PAD_TOKEN_ID) for x in dec_input_ids
    ]
    return {
        "input_ids": input_ids,
        "labels": torch.tensor(np.array(labels)),
        "dec_input_ids": torch.tensor(np.array(dec_input_ids)),
    }


def seed_tokenizer(model: Whisper) -> Tokenizer:
    """The recipe's tokenizer: multilingual, Japanese, transcribe."""
    return whisper.tokenizer.get_tokenizer(
        True, num_languages=model.num_languages, language="ja", task="transcribe"
    )


def seed_optimizer(model: Whisper, total_steps: int) -> tuple[torch.optim.Optimizer, object]:
    """The recipe's AdamW over every named parameter (frozen ones never get a gradient, so
    AdamW skips them) in its two name-matched groups, and transformers'
    `get_linear_schedule_with_warmup` (the learning rate is 0 at step 0, peaks after
    WARMUP_STEPS, falls linearly to 0 at `total_steps`)."""
    named = list(model.named_parameters())
    groups = [
        {
            "params": [p for n, p in named if not any(nd in n for nd in NO_DECAY)],
            "weight_decay": WEIGHT_DECAY,
        },
        {"params": [p for n, p in named if any(nd in n for nd in NO_DECAY)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=LEARNING_RATE, eps=ADAM_EPSILON)

    def factor(step: int) -> float:
        if step < WARMUP_STEPS:
            return step / max(1, WARMUP_STEPS)
        return max(0.0, (total_steps - step) / max(1, total_steps - WARMUP_STEPS))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(
    model: Whisper,
    dataset: SeedSpeechDataset,
    *,
    batch_size: int,
    steps: int,
    device: torch.device,
    num_workers: int = NUM_WORKERS,
    on_batch: Callable[[int, dict], None] | None = None,
    on_step_end: Callable[[int, dict], None] | None = None,
) -> list[float]:
    """Train for `steps` optimizer steps the recipe's way; returns the losses.

    The DataLoader shuffles, drops the last partial batch and starts its workers afresh every
    epoch, as the recipe's did. The encoder runs under no_grad every step. On CUDA the step
    runs under fp16 autocast with a GradScaler (Lightning's precision=16). `on_batch(step,
    batch)` is called when a batch has arrived, `on_step_end(step, batch)` after its optimizer
    step (for the benchmark's clock).
    """
    model.to(device).train()
    for p in model.encoder.parameters():
        p.requires_grad = False
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    optimizer, scheduler = seed_optimizer(model, steps)
    on_cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=on_cuda)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        collate_fn=seed_collate,
    )
    losses: list[float] = []
    step = 0
    while step < steps:
        for batch in loader:
            if on_batch is not None:
                on_batch(step, batch)
            input_ids = batch["input_ids"].to(device)
            labels = batch["labels"].long().to(device)
            dec_input_ids = batch["dec_input_ids"].long().to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=on_cuda):
                with torch.no_grad():
                    audio_features = model.encoder(input_ids)
                out = model.decoder(dec_input_ids, audio_features)
                loss = loss_fn(out.view(-1, out.size(-1)), labels.view(-1))
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            if on_step_end is not None:
                on_step_end(step, batch)
            step += 1
            if step == steps:
                break
    return [float(loss) for loss in losses]


def evaluate(
    model: Whisper, dataset: SeedSpeechDataset, device: torch.device
) -> tuple[list[str], list[str]]:
    """The article's evaluation loop: batches of 2 through `model.decode` (greedy, up to its
    default 224 tokens); fp16 on CUDA as the article ran it. Returns (hypotheses, references)."""
    model.to(device).eval()
    on_cuda = device.type == "cuda"
    options = whisper.DecodingOptions(language="ja", without_timestamps=True, fp16=on_cuda)
    tokenizer = dataset.tokenizer
    loader = DataLoader(dataset, batch_size=EVAL_BATCH_SIZE, collate_fn=seed_collate)
    hypotheses, references = [], []
    for batch in loader:
        mel = batch["input_ids"].to(device)
        if on_cuda:
            mel = mel.half()
        labels = batch["labels"].long()
        with torch.no_grad():
            results = model.decode(mel, options)
        hypotheses += [result.text for result in results]
        for label in labels:
            label[label == IGNORE_INDEX] = tokenizer.eot
            # The article's HF tokenizer took skip_special_tokens; tiktoken's does not, and
            # every special token id is >= eot.
            references.append(tokenizer.decode([t for t in label.tolist() if t < tokenizer.eot]))
    return hypotheses, references
