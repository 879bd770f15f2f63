"""Data of any size: start-up time, peak memory and loader throughput as the data set grows.

Image folders of 1k, 10k and 100k JPEGs (192x192, in 10 class folders; 1,000 distinct pictures of
builtin:shapes, hard-linked over and over for the larger sets, so that each set is that many files to
list and decode) and the same images as WebDataset tar shards (10,000 per shard); audio folders of 10
minutes and 10 hours (16 kHz mono WAV, ten files each).

- start-up: a fresh `diffkit train` process that opens the data and trains 2 steps of a tiny model
  (--workers 0), its wall seconds (the median of 3) and peak RSS: first with the cache emptied before
  each (the folder listed, the shards' headers read), then from the index the first cached;
- throughput: examples/s of the loader (`runs.batches` behind a `loader.Prefetcher` with 0, 2 and 4
  workers; batches of 64 made, encoded to the model's space and handed over), at 64 and 128 px; for the
  shards also webdataset's own streaming reader (decode, random crop, batch) through a torch DataLoader.

    python bench/data.py [--threads 2] [--sizes 1000,10000,100000] [--batches 30] [--repeats 3]

Writes bench/results/data.json; the generated data stay in bench/data/generated/ for the next run.
"""

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path("bench/data/generated")
UNIQUE, SIDE, CLASSES, SHARD = 1000, 192, 10, 10_000
RATE = 16000


def image_folder(count: int) -> Path:
    """count JPEGs in CLASSES folders: UNIQUE pictures drawn once, then hard-linked."""
    import numpy as np

    from diffkit.image.data import draw_shape

    unique = ROOT / "unique"
    if not unique.exists():
        (ROOT / "unique.tmp").mkdir(parents=True, exist_ok=True)
        for i in range(UNIQUE):
            rng = np.random.default_rng([7, i])
            draw_shape(rng, i % 4, (SIDE, SIDE)).save(ROOT / "unique.tmp" / f"{i:04d}.jpg", quality=90)
        (ROOT / "unique.tmp").rename(unique)
    folder = ROOT / f"images-{count}"
    if not folder.exists():
        partial = ROOT / f"images-{count}.tmp"
        for i in range(count):
            label = partial / f"class{i % CLASSES}"
            label.mkdir(parents=True, exist_ok=True)
            os.link(unique / f"{i % UNIQUE:04d}.jpg", label / f"{i:06d}.jpg")
        partial.rename(folder)
    return folder


def image_shards(count: int) -> str:
    """The folder's JPEGs (the same bytes) as WebDataset shards with a .cls member each."""
    folder = ROOT / f"shards-{count}"
    shards = -(-count // SHARD)
    if not folder.exists():
        source = image_folder(count)
        partial = ROOT / f"shards-{count}.tmp"
        partial.mkdir(parents=True, exist_ok=True)
        files = sorted(source.rglob("*.jpg"))
        for number in range(shards):
            with tarfile.open(partial / f"train-{number:06d}.tar", "w") as tar:
                for path in files[number * SHARD:(number + 1) * SHARD]:
                    # Members written from bytes, as webdataset's TarWriter does (tar.add would store the
                    # hard-linked copies as links to one member).
                    label = path.parent.name.removeprefix("class").encode()
                    for name, data in ((f"{path.stem}.jpg", path.read_bytes()), (f"{path.stem}.cls", label)):
                        info = tarfile.TarInfo(name)
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
        partial.rename(folder)
    return str(folder / f"train-{{000000..{shards - 1:06d}}}.tar")


def audio_folder(minutes: int) -> Path:
    """Ten WAV files of minutes/10 each: a chord with a little noise, written a block at a time."""
    import numpy as np
    import soundfile

    folder = ROOT / f"audio-{minutes}min"
    if not folder.exists():
        partial = ROOT / f"audio-{minutes}min.tmp"
        partial.mkdir(parents=True, exist_ok=True)
        rng, block = np.random.default_rng(0), 60 * RATE
        for i in range(10):
            with soundfile.SoundFile(partial / f"take{i}.wav", "w", RATE, 1, "PCM_16") as f:
                for start in range(0, minutes * 60 * RATE // 10, block):
                    t = (start + np.arange(block)) / RATE
                    f.write(0.2 * np.sin(2 * np.pi * 220 * (1 + i / 10) * t) + 0.01 * rng.standard_normal(block))
        partial.rename(folder)
    return folder


def start_up(modality: str, data: str, extra: list[str], threads: int, cached: bool, repeats: int) -> dict:
    """Wall seconds (median of `repeats`) and peak RSS (MiB, the largest) of a fresh process training 2
    steps on `data`: with nothing cached before each, or from the index a previous start cached."""
    out, cache = ROOT / "run", ROOT / "cache"
    args = [sys.executable, "-m", "diffkit", "train", modality, "--data", data, "--out", str(out), "--steps", "2",
            "--workers", "0", "-q", *extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), DIFFKIT_CACHE=str(cache))
    seconds, peaks = [], []
    for _ in range(repeats):
        subprocess.run(["rm", "-rf", str(out)] + ([] if cached else [str(cache)]), check=True)
        begin = time.perf_counter()
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        seconds.append(time.perf_counter() - begin)
        peaks.append(usage.ru_maxrss / 1024)
        if status != 0:
            raise SystemExit(f"{' '.join(args)} failed: {process.stderr.read().decode()}")
    return {"seconds": round(statistics.median(seconds), 2), "runs": [round(x, 2) for x in seconds],
            "peak_rss_mib": round(max(peaks), 1)}


def throughput(data: str, size: int, workers: int, batches: int) -> float:
    """Examples per second of diffkit's loader over `data` at `size` px (a fresh process: the loader's
    forked workers must not inherit another measurement's)."""
    code = f"""
import time, torch
from diffkit.image import codec
from diffkit.image.data import open_data
from diffkit.loader import Prefetcher
from diffkit.options import Training
from diffkit.runs import batches
torch.set_num_threads(1)
training = Training(out="unused", batch_size=64, seed=0)
dataset = open_data({data!r}, ({size}, {size}), 3, crop="random", flip=True)
batch_at = batches(dataset, training, codec.to_model, 0, 0.0)
loader = Prefetcher(batch_at, {workers}, 1) if {workers} else batch_at
for step in range(3):
    loader(step, 0)
begin = time.perf_counter()
for step in range(3, 3 + {batches}):
    loader(step, 0)
print(64 * {batches} / (time.perf_counter() - begin))
if {workers}:
    loader.close()
"""
    env = dict(os.environ, OMP_NUM_THREADS="1", DIFFKIT_CACHE=str(ROOT / "cache"))
    return float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True).stdout.strip())


def webdataset_throughput(pattern: str, size: int, workers: int, batches: int) -> float | None:
    """Examples per second of webdataset's streaming pipeline (shards drawn at random by each worker,
    a shuffle buffer, decode, random crop, flip, batches of 64) through a torch DataLoader: the package's
    own way, for comparison."""
    code = f"""
import time, torch, webdataset as wds
from torchvision.transforms import v2
torch.set_num_threads(1)
crop = v2.Compose([v2.PILToTensor(), v2.Resize({size}), v2.RandomCrop({size}), v2.RandomHorizontalFlip(),
                   v2.ToDtype(torch.float32, scale=True)])
dataset = (wds.WebDataset({pattern!r}, resampled=True, empty_check=False).shuffle(1000).decode("pil")
           .to_tuple("jpg", "cls").map_tuple(crop, int).batched(64))
loader = iter(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers={workers}))
for _ in range(3):
    next(loader)
begin = time.perf_counter()
for _ in range({batches}):
    next(loader)
print(64 * {batches} / (time.perf_counter() - begin))
"""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return float(result.stdout.strip()) if result.returncode == 0 else None


TINY_IMAGE = ["--width", "16", "--mults", "1,2", "--blocks", "1", "--batch-size", "8", "--class-cond"]
TINY_AUDIO = ["--sample-rate", str(RATE), "--seconds", "0.5", "--width", "8", "--batch-size", "8"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--minutes", default="10,600")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per start-up figure (the median)")
    parser.add_argument("--out", default="bench/results/data.json")
    args = parser.parse_args()
    sizes, minutes = [int(s) for s in args.sizes.split(",")], [int(m) for m in args.minutes.split(",")]
    import importlib.util

    have_webdataset = importlib.util.find_spec("webdataset") is not None
    results = {"threads": args.threads, "cores": os.cpu_count(), "images": [], "audio": []}
    print(f"{os.cpu_count()} cores; training processes with {args.threads} threads, loader workers with 1")
    print(f"{'data':>22} {'px':>4} {'start s':>8} {'cached s':>9} {'peak MiB':>9} "
          f"{'0 workers/s':>12} {'2 workers/s':>12} {'4 workers/s':>12} {'wds 2 w/s':>10}")
    for count in sizes:
        for kind, data in (("folder", str(image_folder(count))), ("shards", image_shards(count))):
            for size in (64, 128):
                extra = [*TINY_IMAGE, "--image-size", str(size)]
                first = start_up("image", data, extra, args.threads, False, args.repeats)
                cached = start_up("image", data, extra, args.threads, True, args.repeats)
                rates = {w: throughput(data, size, w, args.batches) for w in (0, 2, 4)}
                wds = webdataset_throughput(data, size, 2, args.batches) if kind == "shards" and have_webdataset else None
                row = {"data": f"{count} {kind}", "files": count, "format": kind, "px": size, "start": first,
                       "cached": cached, "examples_per_s": rates, "webdataset_2_workers": wds}
                results["images"].append(row)
                print(f"{row['data']:>22} {size:>4} {first['seconds']:>8.2f} {cached['seconds']:>9.2f} "
                      f"{max(first['peak_rss_mib'], cached['peak_rss_mib']):>9.0f} {rates[0]:>12.0f} {rates[2]:>12.0f} "
                      f"{rates[4]:>12.0f} {'-' if wds is None else round(wds):>10}", flush=True)
    print(f"\n{'audio':>22} {'start s':>8} {'cached s':>9} {'peak MiB':>9}")
    for length in minutes:
        data = str(audio_folder(length))
        first = start_up("audio", data, TINY_AUDIO, args.threads, False, args.repeats)
        cached = start_up("audio", data, TINY_AUDIO, args.threads, True, args.repeats)
        results["audio"].append({"minutes": length, "start": first, "cached": cached})
        print(f"{f'{length} min':>22} {first['seconds']:>8.2f} {cached['seconds']:>9.2f} "
              f"{max(first['peak_rss_mib'], cached['peak_rss_mib']):>9.0f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
