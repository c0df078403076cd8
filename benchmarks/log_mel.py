"""Log-mel cost per batch: on the CPU in DataLoader workers (the seed recipe) vs in the module.

    python benchmarks/log_mel.py --device cpu --batch-size 16
    python benchmarks/log_mel.py --device cuda --batch-size 16

Times `whisper_ft.audio.log_mel_batch` (Whisper's log-mel, one row at a time, as the module
runs it on its device) on a batch of 30-s waveforms, and the per-item CPU path the seed recipe
runs in its Dataset (`pad_or_trim` + `log_mel_spectrogram` per utterance). Prints the
fastest and median milliseconds per batch of each.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import whisper
from whisper.audio import N_SAMPLES

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone, not installed
from whisper_ft.audio import log_mel_batch  # noqa: E402


def timings_ms(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    """(fastest, median) wall time of `fn()` in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=16, help="utterances per batch")
    parser.add_argument("--n-mels", type=int, default=80, help="80 (most models) or 128 (v3)")
    parser.add_argument("--repeats", type=int, default=10, help="timed batches")
    args = parser.parse_args()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    # 5 s of speech-like noise per utterance, zero-padded to 30 s as the collator does.
    waves = [
        rng.standard_normal(16000 * 5).astype(np.float32) * 0.1 for _ in range(args.batch_size)
    ]
    batch = torch.from_numpy(np.stack([whisper.pad_or_trim(w, N_SAMPLES) for w in waves]))
    on_device = batch.to(device)

    def per_item_cpu() -> None:
        for w in waves:
            whisper.log_mel_spectrogram(whisper.pad_or_trim(w), args.n_mels)

    def in_module() -> None:
        log_mel_batch(on_device, args.n_mels)

    cpu = timings_ms(per_item_cpu, torch.device("cpu"), args.repeats)
    on_device = timings_ms(in_module, device, args.repeats)
    print(f"torch threads {torch.get_num_threads()}, batch {args.batch_size}, n_mels {args.n_mels}")
    print("ms per batch                                    fastest   median")
    rows = [("per item on the CPU (seed recipe, in workers)", cpu)]
    rows.append((f"log_mel_batch on {args.device} (this project)", on_device))
    for label, (fastest, median) in rows:
        print(f"{label:<47} {fastest:8.1f} {median:8.1f}")


if __name__ == "__main__":
    main()
