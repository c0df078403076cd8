import numpy as np
import pytest
import soundfile as sf
import torch
import whisper

from whisper_ft.audio import AudioError, audio_duration_s, load_audio, log_mel_batch


def test_stereo_44k_becomes_mono_16k(tmp_path):
    t = np.arange(44100) / 44100
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 44100)
    audio = load_audio(tmp_path / "s.wav")
    assert audio.dtype == np.float32 and audio.shape == (16000,)
    assert np.abs(audio).max() == pytest.approx(0.3, abs=0.01)  # mean of the two channels
    assert audio_duration_s(tmp_path / "s.wav") == pytest.approx(1.0)


def test_unreadable_and_empty_files_name_the_path(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(AudioError, match="bad.wav: cannot read audio"):
        load_audio(tmp_path / "bad.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0), 16000)
    with pytest.raises(AudioError, match="empty.wav: the file holds no audio"):
        load_audio(tmp_path / "empty.wav")


def test_batch_log_mel_equals_whisper_per_item_not_whole_batch():
    torch.manual_seed(0)
    loud, quiet = torch.randn(16000), 1e-4 * torch.randn(16000)
    batch = torch.stack([loud, quiet])
    mel = log_mel_batch(batch, 80)
    assert mel.shape == (2, 80, 100)
    for row, audio in enumerate((loud, quiet)):
        torch.testing.assert_close(mel[row], whisper.log_mel_spectrogram(audio, 80))
    # whisper's own call on the batch clamps the quiet item against the loud one's maximum
    assert not torch.allclose(whisper.log_mel_spectrogram(batch, 80)[1], mel[1])


def test_log_mel_stays_float32_under_mixed_precision_autocast():
    torch.manual_seed(0)
    audio = torch.randn(2, 16000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mel = log_mel_batch(audio, 80)
        # what an unprotected call computes: its mel-filter matmul rounded to bfloat16
        rounded = whisper.log_mel_spectrogram(audio[0], 80)
    assert mel.dtype == torch.float32
    torch.testing.assert_close(mel, log_mel_batch(audio, 80))
    assert not torch.allclose(rounded.float(), mel[0], atol=1e-4, rtol=0)
