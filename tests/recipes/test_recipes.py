"""The shipped recipes: package data found by name, listed and copied out by `recipes`."""

from pathlib import Path

import pytest

from whisper_ft.cli.entry import main
from whisper_ft.recipes import (
    RECIPES_DIR,
    copy_recipe,
    recipe_names,
    recipe_path,
    resolve_config,
    with_recipes,
)


def test_the_recipes_are_the_yaml_files_inside_the_package():
    assert recipe_names() == ["jvs_base", "seed_recipe", "synthetic_cpu"]
    assert RECIPES_DIR.parent.name == "whisper_ft"
    assert recipe_path("jvs_base.yaml") == recipe_path("jvs_base") == RECIPES_DIR / "jvs_base.yaml"
    with pytest.raises(ValueError, match=r"no recipe 'nope': the shipped recipes are jvs_base, "):
        recipe_path("nope")


def test_config_values_resolve_to_a_file_a_recipe_or_stay_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = str(RECIPES_DIR / "jvs_base.yaml")
    assert resolve_config("jvs_base") == shipped
    assert resolve_config("configs/jvs_base.yaml") == shipped  # an older checkout's path
    (tmp_path / "jvs_base.yaml").write_text("model: {}\n")
    assert resolve_config("jvs_base.yaml") == "jvs_base.yaml"  # a real file wins
    assert resolve_config("mine.yaml") == "mine.yaml"  # left for LightningCLI to refuse
    args = ["fit", "--config", "seed_recipe", "--config=synthetic_cpu", "--trainer.max_steps", "3"]
    assert with_recipes(args) == [
        "fit",
        "--config",
        str(RECIPES_DIR / "seed_recipe.yaml"),
        f"--config={RECIPES_DIR / 'synthetic_cpu.yaml'}",
        "--trainer.max_steps",
        "3",
    ]


def test_recipes_lists_them_and_copies_one_without_overwriting(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["recipes"])
    assert done.value.code == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed[:3]] == recipe_names()
    assert "default recipe" in listed[0]
    with pytest.raises(SystemExit):
        main(["recipes", "--copy", "jvs_base", f"{tmp_path}/mine/"])
    written = tmp_path / "mine" / "jvs_base.yaml"
    assert written.read_bytes() == recipe_path("jvs_base").read_bytes()
    assert f"fit --config {written}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        main(["recipes", "--copy", "jvs_base", str(written)])
    assert (
        str(refused.value.code)
        == f"error: {written}: exists; give another path (nothing was overwritten)."
    )
    assert Path(copy_recipe("seed_recipe", tmp_path / "s.yaml")).is_file()


def test_the_default_recipe_clips_gradients_as_measured_and_the_seed_recipe_does_not():
    import yaml

    def trainer(name: str) -> dict:
        return yaml.safe_load(recipe_path(name).read_text(encoding="utf-8"))["trainer"]

    assert trainer("jvs_base")["gradient_clip_val"] == 1.0
    assert "gradient_clip_val" not in trainer("seed_recipe")  # the article's, as it was
