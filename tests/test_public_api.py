"""The package's public API: every name importable from `whisper_ft` itself, lazily."""

import subprocess
import sys

import pytest

import whisper_ft


@pytest.mark.parametrize("name", sorted(whisper_ft._PUBLIC))
def test_each_public_name_is_the_object_its_module_defines(name):
    import importlib

    module = importlib.import_module(whisper_ft._PUBLIC[name])
    assert getattr(whisper_ft, name) is getattr(module, name)
    assert name in dir(whisper_ft)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'WhisperFineTunr'"):
        whisper_ft.WhisperFineTunr  # noqa: B018


def test_importing_the_package_and_the_transcriber_imports_no_lightning():
    code = (
        "import sys, whisper_ft; from whisper_ft import Transcriber; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pytorch_lightning', 'lightning', 'lightning_fabric')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
