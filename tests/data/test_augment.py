import pickle

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset
from whisper.audio import HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE

from whisper_ft.data.augment import (
    AugmentError,
    NoiseBank,
    SpecAugment,
    WaveformAugment,
    WorkerRng,
    add_noise,
    augment_waveform,
    mask_spans,
    spans_to_mask,
    spec_augment,
    valid_frame_counts,
)


def sine(freq_hz: float, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def peak_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)[spectrum.argmax()])


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


@pytest.fixture
def noise_dir(tmp_path):
    """White noise: one 0.25-s wav at 16 kHz and one 0.5-s flac at 8 kHz in a subfolder."""
    rng = np.random.default_rng(1)
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "a.wav", 0.1 * rng.standard_normal(4000), 16000)
    sf.write(tmp_path / "sub" / "b.FLAC", 0.2 * rng.standard_normal(4000), 8000)
    (tmp_path / "notes.txt").write_text("not audio")
    return tmp_path


def test_off_by_default_returns_the_input():
    audio = sine(440, 0.5)
    assert not WaveformAugment().enabled and not SpecAugment().enabled
    assert augment_waveform(audio, WaveformAugment(), np.random.default_rng(0)) is audio
    mel = torch.randn(2, 80, 300)
    out = spec_augment(mel, SpecAugment())
    assert torch.equal(out, mel) and out is not mel


def test_speed_changes_length_and_pitch():
    audio = sine(440, 1.0)
    rng = np.random.default_rng(0)
    faster = augment_waveform(audio, WaveformAugment(speed_prob=1.0, speeds=(1.1,)), rng)
    assert len(faster) == round(SAMPLE_RATE / 1.1) and faster.dtype == np.float32
    assert peak_hz(faster) == pytest.approx(484, abs=2)
    slower = augment_waveform(audio, WaveformAugment(speed_prob=1.0, speeds=(0.9,)), rng)
    assert len(slower) == round(SAMPLE_RATE / 0.9)
    assert peak_hz(slower) == pytest.approx(396, abs=2)


def test_speed_never_pushes_an_item_past_30_s():
    audio = np.zeros(N_SAMPLES - 8000, dtype=np.float32)  # 29.5 s: 0.9× would make 32.8 s
    config = WaveformAugment(speed_prob=1.0, speeds=(0.9, 1.1))
    rng = np.random.default_rng(0)
    lengths = {len(augment_waveform(audio, config, rng)) for _ in range(8)}
    assert lengths == {round(len(audio) / 1.1)}
    too_long = np.zeros(34 * SAMPLE_RATE, dtype=np.float32)  # 1.1× still leaves 30.9 s
    assert augment_waveform(too_long, config, rng) is too_long


def test_gain_scales_in_db_then_clips():
    audio = sine(440, 0.1, amplitude=0.25)
    rng = np.random.default_rng(0)
    louder = augment_waveform(audio, WaveformAugment(volume_prob=1.0, gain_db=(6.0, 6.0)), rng)
    np.testing.assert_allclose(louder, audio * 10 ** (6 / 20), rtol=1e-6)
    assert np.abs(louder).max() == pytest.approx(0.5, rel=0.01)  # +6 dB ≈ twice the amplitude
    loud = sine(440, 0.1, amplitude=0.8)
    clipped = augment_waveform(loud, WaveformAugment(volume_prob=1.0, gain_db=(6.0, 6.0)), rng)
    assert np.abs(clipped).max() == 1.0
    np.testing.assert_array_equal(np.abs(clipped) == 1.0, np.abs(loud) * 10 ** (6 / 20) >= 1.0)


def test_noise_is_mixed_at_the_drawn_snr(noise_dir):
    bank = NoiseBank(noise_dir)
    assert [p.name for p in bank.files] == ["a.wav", "b.FLAC"]
    clean = sine(440, 1.0, amplitude=0.3)
    config = WaveformAugment(noise_prob=1.0, noise_dir=str(noise_dir), snr_db=(10.0, 10.0))
    for seed in range(4):
        noisy = augment_waveform(clean, config, np.random.default_rng(seed), bank)
        assert noisy.shape == clean.shape and noisy.dtype == np.float32
        assert snr_db(clean, noisy) == pytest.approx(10.0, abs=0.1)


def test_short_noise_is_tiled(tmp_path):
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 4000)  # 0.25 s, no value repeats
    sf.write(tmp_path / "short.wav", noise, SAMPLE_RATE, subtype="FLOAT")
    segment = NoiseBank(tmp_path).segment(SAMPLE_RATE, np.random.default_rng(0))
    assert segment.shape == (SAMPLE_RATE,)
    start = int(np.flatnonzero(noise.astype(np.float32) == segment[0])[0])
    expected = np.tile(noise, 6)[start : start + SAMPLE_RATE].astype(np.float32)
    np.testing.assert_array_equal(segment, expected)  # wraps end to start, no zeros


def test_silent_speech_or_noise_gives_no_nan():
    silence, noise = np.zeros(1000, np.float32), np.ones(1000, np.float32)
    np.testing.assert_array_equal(add_noise(silence, noise, 10.0), silence)
    speech = sine(440, 1000 / SAMPLE_RATE)
    np.testing.assert_array_equal(add_noise(speech, np.zeros(1000, np.float32), 10.0), speech)


def test_noise_folder_errors_name_the_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no audio here")
    with pytest.raises(AugmentError, match=f"{tmp_path}: no noise files"):
        NoiseBank(tmp_path)
    with pytest.raises(AugmentError, match="missing: noise folder not found"):
        NoiseBank(tmp_path / "missing")
    with pytest.raises(AugmentError, match="noise_prob=0.5 needs noise_dir"):
        WaveformAugment(noise_prob=0.5)
    with pytest.raises(ValueError, match="needs noise=NoiseBank"):
        augment_waveform(sine(440, 0.1), WaveformAugment(noise_prob=1.0, noise_dir="x"), None)


def test_noise_bank_pickles_without_its_cache(noise_dir):
    bank = NoiseBank(noise_dir)
    bank.load(0)
    copy = pickle.loads(pickle.dumps(bank))
    assert copy.files == bank.files and len(copy._cache) == 0
    np.testing.assert_array_equal(copy.load(0), bank.load(0))


def test_waveform_probabilities_are_respected():
    audio = sine(440, 0.05)
    config = WaveformAugment(volume_prob=0.5, gain_db=(3.0, 3.0))
    rng = np.random.default_rng(0)
    changed = sum(augment_waveform(audio, config, rng) is not audio for _ in range(400))
    assert 160 <= changed <= 240


class RandomItems(Dataset):
    def __init__(self) -> None:
        self.rng = WorkerRng()

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> float:
        return float(self.rng().random())


def test_worker_rng_differs_per_worker_and_epoch_and_repeats_with_the_seed():
    torch.manual_seed(3)
    rng = WorkerRng()
    first = rng()
    assert rng() is first  # one generator per process and seed: draws go on
    x = first.random()
    torch.manual_seed(4)
    assert rng() is not first  # a new torch seed makes a new generator
    torch.manual_seed(3)
    assert rng().random() == x  # the same seed draws the same numbers again

    def epochs(seed: int, workers: int) -> list[list[float]]:
        torch.manual_seed(seed)
        loader = DataLoader(RandomItems(), batch_size=2, num_workers=workers)
        return [[x for batch in loader for x in batch.tolist()] for _ in range(2)]

    for workers in (0, 2):
        run = epochs(0, workers)
        assert len(set(run[0])) == 4  # items (and the two workers) draw different numbers
        assert run[0] != run[1]  # a new epoch draws new augmentations
        assert epochs(0, workers) == run  # the same seed draws the same ones


def test_valid_frame_counts_round_up_and_cap():
    n_samples = torch.tensor([1, HOP_LENGTH, HOP_LENGTH + 1, N_SAMPLES, 2 * N_SAMPLES])
    assert valid_frame_counts(n_samples).tolist() == [1, 1, 2, N_FRAMES, N_FRAMES]


def test_mask_spans_fit_their_rows():
    generator = torch.Generator().manual_seed(0)
    length = torch.tensor([10, 300, 3000])
    max_width = torch.tensor([0, 60, 70])
    starts, widths = mask_spans(5000, max_width, length, generator)
    assert starts.shape == widths.shape == (3, 5000)
    assert (widths >= 0).all() and (widths <= max_width[:, None]).all()
    assert (starts >= 0).all() and (starts + widths <= length[:, None]).all()
    assert widths[1].min() == 0 and widths[1].max() == 60  # both ends of 0..T are drawn
    assert starts[0].max() == 10  # an empty span may sit at the end
    mask = spans_to_mask(torch.tensor([[2, 6]]), torch.tensor([[3, 0]]), 8)
    assert mask.tolist() == [[False, False, True, True, True, False, False, False]]


def runs(flags: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool tensor."""
    edges = np.diff(np.concatenate([[0], flags.numpy().astype(int), [0]]))
    return (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist()


def test_spec_augment_masks_bands_and_frames_within_valid_frames():
    torch.manual_seed(0)
    mel = torch.rand(6, 80, 400) * 2 - 1  # no two cells equal, so every masked cell shows
    valid = torch.tensor([400, 300, 150, 100, 50, 10])
    config = SpecAugment(prob=1.0, n_freq_masks=1, freq_mask_bins=20, n_time_masks=1,
                         time_mask_frames=40, max_time_mask_fraction=0.5)  # fmt: skip
    out = spec_augment(mel, config, valid, torch.Generator().manual_seed(1))
    changed = out != mel
    assert out.shape == mel.shape and not torch.equal(out, mel)
    for row in range(6):
        bands, frames = changed[row].all(dim=1), changed[row].all(dim=0)
        band_runs, frame_runs = runs(bands), runs(frames)
        assert len(band_runs) <= 1 and all(w <= 20 for w in band_runs)
        assert len(frame_runs) <= 1
        assert all(w <= min(40, int(valid[row]) // 2) for w in frame_runs)
        assert not frames[valid[row] :].any()  # padding frames never masked
        # every changed cell lies in a masked band or frame, and holds the row's mean
        assert torch.equal(changed[row], bands[:, None] | frames[None, :])
        fill = mel[row, :, : valid[row]].mean()
        torch.testing.assert_close(out[row][changed[row]], fill.expand(int(changed[row].sum())))
    assert sum(len(runs(changed[r].all(dim=1))) for r in range(6)) >= 5  # F=0 draws are rare


def test_spec_augment_draws_exactly_the_requested_masks():
    generator = torch.Generator().manual_seed(0)
    config = SpecAugment(prob=1.0, n_freq_masks=2, freq_mask_bins=5, n_time_masks=3,
                         time_mask_frames=8, max_time_mask_fraction=1.0)  # fmt: skip
    mel = torch.rand(200, 80, 300)
    out = spec_augment(mel, config, torch.full((200,), 300), generator)
    changed = out != mel
    band_runs = [runs(changed[r].all(dim=1)) for r in range(200)]
    frame_runs = [runs(changed[r].all(dim=0)) for r in range(200)]
    assert max(len(r) for r in band_runs) == 2 and max(len(r) for r in frame_runs) == 3
    # overlapping or zero-width masks merge; two masks never cover more than 2F
    assert max(max(r, default=0) for r in band_runs) <= 10
    assert max(max(r, default=0) for r in frame_runs) <= 24


def test_spec_augment_rows_without_luck_are_untouched_and_draws_repeat():
    mel = torch.randn(400, 80, 100)
    config = SpecAugment(prob=0.5, freq_mask_bins=10, time_mask_frames=10)
    out = spec_augment(mel, config, generator=torch.Generator().manual_seed(2))
    touched = (out != mel).flatten(1).any(dim=1)
    assert 160 <= int(touched.sum()) <= 240

    def seeded(seed: int) -> torch.Tensor:
        return spec_augment(mel, config, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(seeded(2), out) and not torch.equal(seeded(3), out)
    copy = mel.clone()
    spec_augment(mel, SpecAugment(prob=1.0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(mel, copy)  # the input is never written
    assert torch.equal(spec_augment(mel, SpecAugment(prob=0.0)), mel)
