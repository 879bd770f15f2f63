"""The modality registry: a plain dict from name to the module that implements it.

A modality's commands module provides `COMMANDS` (verb -> Typer command) and `describe(run, config) ->
dict` (for `diffkit info`); its library lives beside it in pipeline.py (`build(config) -> nn.Module`
among it), and config.py's `<Modality>Data` is the dataclass of its run config's "data". Modules are imported
lazily by name.
"""

import importlib

from diffkit.errors import choose

MODALITIES = {"image": "diffkit.image.commands", "audio": "diffkit.audio.commands",
              "text": "diffkit.text.commands", "points": "diffkit.points.commands"}


def get(name: str):
    choose("modality", name, MODALITIES)
    return importlib.import_module(MODALITIES[name])


def data_type(name: str) -> type:
    """The dataclass of config.json's "data" for a run of modality `name` (its config.py's `ImageData`, `AudioData`, ...)."""
    choose("modality", name, MODALITIES)
    return getattr(importlib.import_module(f"diffkit.{name}.config"), f"{name.capitalize()}Data")


def register_all(groups) -> None:
    for name in MODALITIES:
        for verb, command in get(name).COMMANDS.items():
            groups[verb].command(name)(command)
