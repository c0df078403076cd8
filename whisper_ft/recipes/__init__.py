"""The shipped LightningCLI recipes (`*.yaml` here, package data: a pip install has them),
found by name: `python -m whisper_ft fit --config jvs_base`. `python -m whisper_ft recipes`
lists them; `recipes --copy NAME DEST` writes one out to edit.

    recipe_path("jvs_base")  # …/whisper_ft/recipes/jvs_base.yaml
"""

import shutil
from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parent


def recipe_names() -> list[str]:
    """The shipped recipes' names, sorted."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    """The file of the shipped recipe `name` (with or without .yaml); ValueError naming the
    recipes there are."""
    path = RECIPES_DIR / f"{Path(name).stem}.yaml"
    if not path.is_file():
        raise ValueError(
            f"no recipe {name!r}: the shipped recipes are {', '.join(recipe_names())}, or give a "
            "YAML file's path."
        )
    return path


def recipe_summary(name: str, width: int = 90) -> str:
    """The first sentence of the recipe's opening comment (what it is for), cut at `width`."""
    lines = recipe_path(name).read_text(encoding="utf-8").splitlines()
    comment = []
    for line in lines:
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    sentence = " ".join(c for c in comment if c).split(". ")[0].split(": ")[0]
    return sentence if len(sentence) <= width else sentence[: width - 1] + "…"


def resolve_config(value: str) -> str:
    """`--config`'s value as LightningCLI should read it: a file that exists as given; else a
    shipped recipe's name (`jvs_base`) or a path to one that is not there, such as the
    `configs/jvs_base.yaml` of an older checkout, becomes the shipped file."""
    if Path(value).is_file() or Path(value).stem not in recipe_names():
        return value
    return str(recipe_path(value))


def with_recipes(args: list[str]) -> list[str]:
    """Command-line `args` with every `--config NAME` (and `--config=NAME`) resolved by
    `resolve_config`."""
    resolved = list(args)
    for i, arg in enumerate(resolved):
        if arg == "--config" and i + 1 < len(resolved):
            resolved[i + 1] = resolve_config(resolved[i + 1])
        elif arg.startswith("--config="):
            resolved[i] = "--config=" + resolve_config(arg.removeprefix("--config="))
    return resolved


def copy_recipe(name: str, dest: str | Path) -> Path:
    """Write the shipped recipe `name` to `dest` (a file, or a folder to put NAME.yaml in) to
    edit; an existing file is never overwritten."""
    source = recipe_path(name)
    folder = str(dest).endswith(("/", "\\"))
    dest = Path(dest)
    if dest.is_dir() or folder:
        dest = dest / source.name
    if dest.exists():
        raise ValueError(f"{dest}: exists; give another path (nothing was overwritten).")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    return dest
