"""Each modality's library works from Python without the CLI, and the CLI is a thin layer over it: a run
trained by `pipeline.train` is the run `diffkit train` makes with the same settings, bit for bit, and it
samples and evaluates from Python."""

import json

import torch
from cli import run_here
from safetensors.torch import load_file

from diffkit.core import SamplingSpec


def test_a_run_trained_from_python_is_the_run_the_cli_trains(tmp_path):
    from diffkit.points import pipeline

    code, stderr = run_here("train", "points", "--out", tmp_path / "cli", "--steps", 3, "--hidden", 16,
                            "--batch-size", 16, "--timesteps", 50, "--lr", 5e-4, "--seed", 2, "-q")
    assert code == 0, stderr
    spec = pipeline.train_spec(str(tmp_path / "library"), steps=3, batch_size=16, timesteps=50, lr=5e-4, seed=2)
    pipeline.train(spec, hidden=16)
    for name in ("model.safetensors", "state/trainer.safetensors"):
        ours, theirs = load_file(tmp_path / "library" / name), load_file(tmp_path / "cli" / name)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    config = {part: json.loads((tmp_path / folder / "config.json").read_text())
              for part, folder in (("cli", "cli"), ("library", "library"))}
    assert {k: v for k, v in config["cli"].items() if k != "train"} == \
        {k: v for k, v in config["library"].items() if k != "train"}
    points = pipeline.generate(pipeline.load(str(tmp_path / "library")), 5, SamplingSpec(steps=4))
    assert points.shape == (5, 2) and torch.isfinite(points).all()


def test_an_image_run_trains_samples_and_evaluates_from_python(tmp_path):
    from diffkit.image import pipeline
    from diffkit.image.evaluation import evaluate

    spec = pipeline.train_spec(str(tmp_path / "run"), steps=2, batch_size=4, timesteps=50)
    pipeline.train(spec, image_size="16", width=16, mults="1,2", blocks=1, attention="8")
    run = pipeline.load(str(tmp_path / "run"))
    images = pipeline.images(run, 2, SamplingSpec(steps=3))
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8
    records = list(evaluate(run, SamplingSpec(steps=3), n=4, strata=2, samples=0))
    assert [r["metric"] for r in records] == ["nll_bits_per_dim"] and records[0]["value"] > 0
