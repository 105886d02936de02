"""Named recipes: DYPO, the baselines the paper compares it with, its ablations and the public code.

A recipe is a YAML file beside this module holding the fields that differ from the defaults in
`dypo_train.config`. `resolve` layers defaults < recipe < user YAML < command-line overrides.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any

from dypo_data.errors import ConfigError, InputError
from dypo_train.config import TrainConfig, build, flatten, parse_override

DEFAULT_RECIPE = "dypo"


def recipe_names() -> list[str]:
    """Every shipped recipe, sorted."""
    return sorted(p.name[: -len(".yaml")] for p in resources.files(__package__).iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, origin: str) -> dict[str, Any]:
    import yaml

    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{origin} is not valid YAML: {str(exc).splitlines()[0]}", "fix the file's syntax") from exc
    return tree or {}


def recipe_values(name: str) -> dict[str, Any]:
    """The dotted overrides of recipe `name`."""
    names = recipe_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"use one of: {', '.join(names)}"
        raise ConfigError(f"unknown recipe {name!r}", hint)
    text = resources.files(__package__).joinpath(f"{name}.yaml").read_text()
    return flatten(_read_yaml(text, f"recipe {name}"), origin=f"recipe {name}")


def file_values(path: str | Path) -> dict[str, Any]:
    """The dotted values of a user's YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} does not exist", "pass the path of a YAML file, or a recipe name with --recipe")
    return flatten(_read_yaml(path.read_text(), str(path)), origin=str(path))


def resolve(recipe: str | None = None, config_file: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Defaults < recipe < config file < overrides, validated.

    The recipe is `recipe` if given, else the config file's `recipe:` key, else `dypo`.
    """
    user = file_values(config_file) if config_file else {}
    name = recipe or user.get("recipe") or DEFAULT_RECIPE
    values = recipe_values(str(name))
    values.update(user)
    values.update(dict(parse_override(o) for o in overrides))
    values["recipe"] = str(name)
    return build(values)
