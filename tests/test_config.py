"""config.json as types: every field of a run's config is checked against its type when the run is read,
and a mangled config is refused in one line naming the file and the field."""

import json

import pytest
from cli import run_here

from diffkit.config import Diffusion, RunConfig, read_config, typed
from diffkit.errors import DiffkitError
from diffkit.image.config import ImageData
from diffkit.points.config import PointsData

from test_contract import TRAIN


def test_a_config_reads_back_as_the_types_it_was_written_from(tmp_path):
    code, stderr = run_here("train", "points", "--out", tmp_path / "run", "--steps", 2, *TRAIN["points"])
    assert code == 0, stderr
    config = read_config(tmp_path / "run")
    assert isinstance(config.diffusion, Diffusion) and isinstance(config.data, PointsData)
    assert config.data.dim == 2 and isinstance(config.data.mean, tuple) and config.train["steps"] == 2
    assert config.to_json() == {k: v for k, v in json.loads((tmp_path / "run" / "config.json").read_text()).items()
                                if k != "format_version"}


DATA = {"source": "builtin:shapes", "image_size": [32, 32], "channels": 3}


@pytest.mark.parametrize("raw, message", [
    ({**DATA, "channels": "3"}, "where: channels must be an integer, got a string"),
    ({**DATA, "channels": True}, "where: channels must be an integer, got true or false"),
    ({**DATA, "image_size": 32}, "where: image_size must be a list, got an integer"),
    ({**DATA, "image_size": [32, None]}, "where: image_size must be an integer, got null"),
    ({**DATA, "classes": "cats"}, "where: classes must be a list, got a string"),
    ({**DATA, "flip": 1}, "where: flip must be true or false, got an integer"),
    ({**DATA, "label_dropout": "0.1"}, "where: label_dropout must be a number, got a string"),
    ({"source": "x", "image_size": [32, 32]}, "where: missing setting 'channels'"),
    ({**DATA, "colour": "red"}, "where: unexpected setting 'colour'"),
    ([DATA], "where must be an object, got a list"),
])
def test_every_field_is_checked_against_its_type(raw, message):
    with pytest.raises(DiffkitError) as caught:
        typed(ImageData, raw, "where")
    assert str(caught.value) == message


def test_optional_fields_take_their_defaults_and_numbers_widen():
    data = typed(ImageData, {**DATA, "label_dropout": 0, "column": None}, "where")
    assert data == ImageData("builtin:shapes", (32, 32), 3, label_dropout=0.0)
    assert isinstance(data.label_dropout, float)
    config = typed(RunConfig, {"modality": "image", "model": {}, "diffusion": {
        "schedule": "cosine", "timesteps": 10, "prediction": "eps", "variance": "fixed_small", "self_cond": False},
        "data": DATA}, "where", {"data": ImageData})
    assert config.train is None and config.diffusion.alphas_cumprod is None


@pytest.mark.parametrize("change, message", [
    (lambda c: c["data"].update(dim="two"), "config.json: data: dim must be an integer, got a string"),
    (lambda c: c.update(diffusion=[1]), "config.json: diffusion must be an object, got a list"),
    (lambda c: c["diffusion"].pop("prediction"), "config.json: diffusion: missing setting 'prediction'"),
    (lambda c: c.update(modality=["points"]), "config.json: unknown modality ['points']; choose one of: image"),
    (lambda c: c.update(train="all"), "config.json: train must be an object, got a string"),
])
def test_a_mangled_config_is_one_error_line_naming_the_file_and_the_field(tmp_path, change, message):
    out = tmp_path / "run"
    assert run_here("train", "points", "--out", out, "--steps", 2, *TRAIN["points"])[0] == 0
    config = json.loads((out / "config.json").read_text())
    change(config)
    (out / "config.json").write_text(json.dumps(config))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*"))
    for args in (("sample", "points", "-m", out, "-n", 2), ("info", out), ("train", "points", "--out", out, "--resume")):
        code, stderr = run_here(*args)
        assert code == 2 and stderr.count("\n") == 1 and message in stderr, (args, stderr)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
