"""The modality registry: a plain dict from name to the module that implements it.

A modality's commands module provides `COMMANDS` (verb -> Typer command) and `describe(run, config) ->
dict` (for `diffkit info`); its library, `build(config) -> nn.Module` among it, lives beside it in
pipeline.py. Modules are imported lazily by name.
"""

import importlib

from diffkit.errors import choose

MODALITIES = {"image": "diffkit.image.commands", "audio": "diffkit.audio.commands",
              "text": "diffkit.text.commands", "points": "diffkit.points.commands"}


def get(name: str):
    choose("modality", name, MODALITIES)
    return importlib.import_module(MODALITIES[name])


def register_all(groups) -> None:
    for name in MODALITIES:
        for verb, command in get(name).COMMANDS.items():
            groups[verb].command(name)(command)
