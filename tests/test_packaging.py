"""The project's set-up files agree with each other and with the README."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _spec(requirement: str) -> str:
    return requirement.strip()[len(_name(requirement)) :].strip().split("#")[0].strip()


def test_environment_yml_lists_the_same_dependencies_as_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): _spec(r) for r in project["dependencies"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    listed: dict[str, str] = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            if item.startswith("-e"):
                assert item == "-e .[dev]"
                continue
            listed[_name(item)] = _spec(item)
    for extra in ("python", "pip", "nodejs"):
        listed.pop(extra, None)
    assert listed == wanted


def test_readme_shows_the_two_commands_and_ci_calls_make_test() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)


def test_public_names_have_docstrings() -> None:
    import inspect

    import metaverse_kit as mk

    missing = [
        name
        for name in mk.__all__
        if (inspect.isclass(getattr(mk, name)) or inspect.isfunction(getattr(mk, name)))
        and not inspect.getdoc(getattr(mk, name))
    ]
    assert missing == []
