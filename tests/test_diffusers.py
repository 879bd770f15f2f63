"""`diffkit import diffusers`: a diffusers UNet2DModel (saved by its own save_pretrained, alone or in a
DDPMPipeline) becomes a run whose denoiser is diffusers' forward, whose DDIM retraces DDIMPipeline's from
the same noise, and which every image command takes; bad folders are one error line and no run."""

import json

import numpy as np
import pytest
import torch
from cli import assert_bad_input, run_here
from PIL import Image

from diffkit.core import SamplingSpec, sample
from diffkit.image.pipeline import load

diffusers = pytest.importorskip("diffusers")  # diffkit[diffusers], which `make test` installs


def _unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
                                 attention_head_dim=8).eval()


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("diffusers")
    unet = _unet()
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(folder / "pipeline")
    code, stderr = run_here("import", "diffusers", folder / "pipeline", "--out", folder / "run", "-q")
    assert code == 0, stderr
    return folder, unet


def test_the_denoiser_is_diffusers_forward(imported):
    folder, unet = imported
    run = load(str(folder / "run"))
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 417, 999])
    with torch.no_grad():
        assert torch.allclose(run.model(x, t), unet(x, t).sample, atol=1e-5)
    assert torch.allclose(run.schedule.alphas_cumprod, diffusers.DDPMScheduler().alphas_cumprod.double())


def test_ddim_from_the_same_noise_retraces_ddim_pipeline(imported):
    folder, unet = imported
    run = load(str(folder / "run"))
    # Unclipped: with clip_sample, diffusers keeps the network's ε̂ beside the clipped x̂_0, where diffkit
    # re-derives ε̂ from it (as improved DDPM does), so clipped steps differ by design.
    scheduler = diffusers.DDIMScheduler.from_config(diffusers.DDPMScheduler().config, clip_sample=False)
    theirs = diffusers.DDIMPipeline(unet=unet, scheduler=scheduler)(
        batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=10, eta=0.0, output_type="pt",
        return_dict=False)[0]  # (x / 2 + 0.5).clamp(0, 1)
    ours = sample(run.model, (2, 3, 16, 16), run.schedule, SamplingSpec("ddim", 10, "leading", seed=3))
    assert torch.allclose((ours / 2 + 0.5).clamp(0, 1), theirs.float(), atol=1e-4)
    # and before the pipeline's clamp, in model space (a random network's samples lie far outside ±1)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    scheduler.set_timesteps(10)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
    assert torch.allclose(ours, x, rtol=1e-4, atol=1e-4 * x.abs().max().item())


def test_every_image_command_takes_an_imported_run(imported, tmp_path):
    folder, _ = imported
    run = folder / "run"
    Image.fromarray(np.full((16, 16, 3), 120, dtype=np.uint8)).save(tmp_path / "in.png")
    (tmp_path / "held").mkdir()
    for i in range(4):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "held" / f"{i}.png")
    fast = ["--steps", 3, "-q"]
    for args in (["sample", "image", "-m", run, "-n", 2, "-o", tmp_path / "s.png"],
                 ["inpaint", "image", "-m", run, "-i", tmp_path / "in.png", "--mask", "box:4,4,8,8", "--resample", 1,
                  "-o", tmp_path / "i.png"],
                 ["style", "image", "-m", run, "-i", tmp_path / "in.png", "-o", tmp_path / "st.png"],
                 ["restore", "image", "-m", run, "-i", tmp_path / "in.png", "--task", "denoise:0.1", "-o", tmp_path / "r.png"],
                 ["eval", "image", "-m", run, "--data", tmp_path / "held", "-n", 4, "--strata", 3, "--samples", 0]):
        code, stderr = run_here(*args, *fast)
        assert code == 0, (args[0], stderr)
    assert Image.open(tmp_path / "s.png").size == (2 + 2 * 18, 2 + 18)


def test_a_bare_unet_folder_takes_ddpm_defaults(tmp_path):
    _unet().save_pretrained(tmp_path / "unet")  # config.json and diffusion_pytorch_model.safetensors
    code, stderr = run_here("import", "diffusers", tmp_path / "unet", "--out", tmp_path / "run", "--json")
    assert code == 0, stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["diffusion"]["prediction"] == "eps" and config["diffusion"]["timesteps"] == 1000


def _bad_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    conditional = tmp_path / "conditional"
    conditional.mkdir()
    (conditional / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    _unet().save_pretrained(tmp_path / "noweights")
    (tmp_path / "noweights" / "diffusion_pytorch_model.safetensors").unlink()
    _unet().save_pretrained(tmp_path / "pickled", safe_serialization=False)  # a .bin only
    _unet().save_pretrained(tmp_path / "mismatch")
    config = json.loads((tmp_path / "mismatch" / "config.json").read_text())
    (tmp_path / "mismatch" / "config.json").write_text(json.dumps({**config, "layers_per_block": 2}))
    return {"empty": "not a diffusers model", "conditional": "unsupported architecture 'UNet2DConditionModel'",
            "noweights": "no diffusion_pytorch_model.safetensors", "pickled": "never unpickles",
            "mismatch": "do not fit its config.json", "missing": "no such folder"}


def test_bad_folders_are_one_error_and_no_run(tmp_path):
    for name, message in _bad_folders(tmp_path).items():
        line = assert_bad_input(["import", "diffusers", tmp_path / name, "--out", tmp_path / f"run-{name}"], b"",
                                tmp_path)
        assert message in line, (name, line)
    line = assert_bad_input(["import", "diffusers", tmp_path / "mismatch", "--out", tmp_path / "empty"], b"", tmp_path)
    assert "already exists" in line
