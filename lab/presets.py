"""Hyperparameter presets (RL Zoo's habit): plain TOML files shipped with the package, one per
algorithm (``lab/presets/<algo>.toml``), one table per environment or data set, a comment naming the
source of each value.

Precedence, lowest first: the Config's field defaults < a preset < a ``--config`` file < flags. Fields
left unset (None) after that take the preset matching the run's env id or data set (the exact name,
else a pattern such as ``"ALE/*"``, else ``"*"``): how env-family defaults are resolved.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import functools
import json
import tomllib
from pathlib import Path
from typing import Any

from lab import registry, safefs
from lab.config import from_dict, to_dict
from lab.errors import LabError

PRESET_DIR = Path(__file__).resolve().parent / "presets"


@functools.cache
def presets(algo: str) -> dict[str, dict[str, Any]]:
    """The presets of ``algo`` by name (empty when it has none)."""
    path = PRESET_DIR / f"{algo}.toml"
    if not path.is_file():
        return {}
    with open(path, "rb") as f:
        return tomllib.load(f)


def matching(algo: str, label: str | None) -> dict[str, Any]:
    """The preset for a run about ``label`` (env id or data set): exact name, else a pattern, else {}."""
    table = presets(algo)
    if label in table:
        return table[label]
    for pattern, values in table.items():
        if pattern != "*" and any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(label or "", pattern):
            return values
    return table.get("*", {})


def named(algo: str, name: str) -> dict[str, Any]:
    """The preset ``name`` of ``algo``; one sentence naming the known ones (or its owner) otherwise."""
    table = presets(algo)
    if name in table:
        return table[name]
    owners = [other for other in registry.ALGORITHMS if other != algo and name in presets(other)]
    if owners:
        raise LabError(f"{name!r} is a preset of {', '.join(owners)}, not of {algo}; "
                       f"{algo}'s presets: {', '.join(table) or 'none'}.")
    raise LabError(f"{algo} has no preset {name!r}; known: {', '.join(table) or 'none'}.")


def fill_unset(config: Any, algo: str, label: str | None) -> Any:
    """``config`` with each field that is None taken from the preset matching ``label``."""
    preset = matching(algo, label)
    unset = {k: v for k, v in preset.items() if getattr(config, k) is None}
    if not unset:
        return config
    return from_dict(type(config), {**to_dict(config), **unset})


def read_config_file(path: Path, algo: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config fields, run options) from a ``--config`` file: a run's config.json (to rerun an
    experiment; its run folder is not reused) or a flat JSON / TOML table of fields."""
    path = Path(path)
    if not path.exists():
        raise LabError(f"cannot read the config file {path}: there is no such file.")
    try:      # the user's own path: a link to it is followed, a FIFO or device refused, the size bounded
        text = safefs.read_bytes(path.resolve())
        data = safefs.parse(text.decode(), path, tomllib.loads if path.suffix == ".toml" else json.loads)
    except ValueError as error:      # not UTF-8, not JSON / TOML, or an integer of more than 4,300 digits
        raise LabError(f"the config file {path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'} "
                       f"({type(error).__name__}).") from None
    if not isinstance(data, dict):
        raise LabError(f"the config file {path} must hold a table of fields, not a {type(data).__name__}.")
    if "config" in data and isinstance(data["config"], dict):     # a run's config.json
        if data.get("algo") not in (None, algo):
            raise LabError(f"{path} is the config of a {data.get('algo')} run, not of {algo}.")
        options = {k: v for k, v in (data.get("options") or {}).items() if k != "run_dir"}
        return dict(data["config"]), options
    from lab.runtime import RunOptions
    run_fields = {f.name for f in dataclasses.fields(RunOptions)}
    return ({k: v for k, v in data.items() if k not in run_fields},
            {k: v for k, v in data.items() if k in run_fields})


def base_config(algo: str, module, preset: str | None, config_file: Path | None):
    """(Config, RunOptions) before the flags: field defaults < the named preset < the config file."""
    from lab.runtime import RunOptions
    fields = dict(named(algo, preset)) if preset else {}
    options: dict[str, Any] = {}
    if config_file is not None:
        file_fields, options = read_config_file(config_file, algo)
        fields.update(file_fields)
    source = f"the config file {config_file}" if config_file else f"the preset {preset!r}"
    known = {f.name for f in dataclasses.fields(module.Config)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise LabError(f"{source} sets {unknown[0]!r}, which is not a field of {algo} "
                       f"(its fields: {', '.join(sorted(known))}).")
    try:
        config = from_dict(module.Config, {**to_dict(module.Config()), **fields})
        return config, from_dict(RunOptions, {**to_dict(RunOptions()), **options})
    except LabError as error:
        raise LabError(f"{source}: {error}") from None
