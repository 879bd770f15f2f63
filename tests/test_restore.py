"""`diffkit restore image|audio` and `eval --restore` end to end on tiny runs: the outputs' sizes, their
consistency with the degraded input, tiles and windows for inputs larger than the model, and bad input."""

import json

import numpy as np
import pytest
import soundfile
from cli import assert_bad_input, foreign_run, run, run_here
from PIL import Image

from test_audio import RATE, TINY as AUDIO
from test_image import TINY as IMAGE

FAST = ["--steps", 4, "-q", "--json"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("restore")
    for name, args in (("image", ["image", "--class-cond", *IMAGE]), ("grey", ["image", "--channels", "1", *IMAGE]),
                       ("audio", ["audio", *AUDIO])):
        code, stderr = run_here("train", *args[:1], "--out", folder / name, "--steps", 10, *args[1:])
        assert code == 0, stderr
    return folder


def _png(path, h, w, channels=3, seed=0):
    # Mid-range values: a restoration meets y exactly, and rounding it to 8 bits clips nothing.
    array = np.random.default_rng(seed).integers(96, 160, (h, w, channels), dtype=np.uint8)
    Image.fromarray(array[:, :, 0] if channels == 1 else array).save(path)
    return path


def _wav(path, seconds, rate, seed=0, scale=0.2):
    samples = (scale * np.random.default_rng(seed).standard_normal(int(seconds * rate))).clip(-1, 1)
    soundfile.write(path, samples, rate, subtype="PCM_16")
    return path


def _restored(result):
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


@pytest.mark.parametrize("task,size,channels,expect", [
    ("upscale:4", (4, 4), 3, (16, 16)),
    ("upscale:2", (10, 13), 3, (20, 26)),  # larger than the model: tiles
    ("colorize", (16, 16), 1, (16, 16)),
    ("deblur:1,denoise:0.05", (24, 16), 3, (24, 16)),
    ("colorize,upscale:2", (8, 8), 1, (16, 16)),
])
def test_restore_image_meets_the_degraded_input(runs, tmp_path, task, size, channels, expect):
    source = _png(tmp_path / "in.png", *size, channels)
    out = tmp_path / "out.png"
    report = _restored(run("restore", "image", "-m", runs / "image", "-i", source, "--task", task, "--class", 1,
                           "-o", out, *FAST))
    with Image.open(out) as image:
        assert image.size == expect[::-1] and image.mode == "RGB"
    assert report["method"] == "ddnm" and report["task"] == task
    # A noiseless task's file meets y to within its 8-bit rounding, tiles and all (one level is 2/255 in
    # model units); under noise y is not met exactly. An unrestored sample misses y by about 0.5.
    bound = 0.25 if "denoise" in task else 1 / 255
    assert report["consistency_rms"] < bound, report


def _levels_off(restored_png, degraded_png, task: str) -> float:
    """How far the written file is from its observation: max |A(x) − y| over every value, in 8-bit levels."""
    from diffkit.image import codec
    from diffkit.image.config import ImageData
    from diffkit.image.restoration import parse_task

    x = codec.to_model(codec.read_image(str(restored_png), 3))[None]
    degradation = parse_task(task, ImageData("x", tuple(x.shape[2:]), 3))
    y = codec.to_model(codec.read_image(str(degraded_png), 1 if degradation.grey else 3))[None]
    return ((degradation.operator()(x) - y).abs().max() * 255 / 2).item()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++2m", "unipc"])
@pytest.mark.parametrize("task,side,channels", [("upscale:4", 4, 3), ("colorize", 16, 1), ("colorize,upscale:2", 8, 1),
                                               ("upscale:2", 13, 3)])  # the last in tiles
def test_a_noiseless_restoration_writes_a_file_that_meets_its_input(runs, tmp_path, sampler, task, side, channels):
    # Inputs that span the whole 8-bit range, so that the range matters: the file's values, once degraded
    # again, are the input's to within one level (the 8-bit rounding of the result).
    source = tmp_path / "in.png"
    array = np.random.default_rng(1).integers(0, 256, (side, side, channels), dtype=np.uint8)
    Image.fromarray(array[:, :, 0] if channels == 1 else array).save(source)
    out = tmp_path / "out.png"
    code, stderr = run_here("restore", "image", "-m", runs / "image", "-i", source, "--task", task, "--class", 1,
                            "--sampler", sampler, "-o", out, *FAST)
    assert code == 0, stderr
    assert _levels_off(out, source, task) <= 1.0


def test_every_method_and_a_folder_from_stdin(runs, tmp_path):
    source = _png(tmp_path / "small.png", 8, 8).read_bytes()
    paths = []
    for method in ("ddnm", "pigdm", "dps", "repaint", "tmpd"):
        report = _restored(run("restore", "image", "-m", runs / "image", "-i", "-", "--task", "upscale:2",
                               "--method", method, "--sampler", "ddim", "-o", tmp_path / "out", *FAST, stdin=source))
        assert report["method"] == method
        assert report["consistency_rms"] <= 1 / 255, report  # the written file meets y within its 8-bit rounding
        paths.append(report["path"].rsplit("/", 1)[1])
    assert paths == ["stdin-restored.png", *(f"stdin-restored-{i}.png" for i in range(1, 5))]


def test_restore_audio_at_another_rate_in_windows(runs, tmp_path):
    # 0.7 s at 4 kHz, for a model of 0.25 s windows at 8 kHz: resampled, then restored in windows.
    source = _wav(tmp_path / "phone.wav", 0.7, 4000)
    out = tmp_path / "full.wav"
    report = _restored(run("restore", "audio", "-m", runs / "audio", "-i", source, "--task", "bandwidth:2000",
                           "-o", out, *FAST))
    samples, rate = soundfile.read(out)
    assert rate == RATE and len(samples) == round(0.7 * RATE)
    # A 10-step model fills the empty band with full-scale noise, which the windows' cross-fades leak below
    # the cutoff and the 16-bit range clips; the final projection over the whole recording puts the file
    # back on its input's band to within the 16-bit rounding (an unrestored clip: ~0.2).
    assert report["consistency_rms"] <= 2 / 65535


def test_declipping_keeps_unclipped_samples_and_goes_beyond_the_level(runs, tmp_path):
    samples = (0.9 * np.sin(np.arange(RATE // 4) * 2 * np.pi * 300 / RATE)).clip(-0.6, 0.6)
    soundfile.write(tmp_path / "clipped.wav", samples, RATE, subtype="PCM_16")
    out = tmp_path / "fixed.wav"
    run("restore", "audio", "-m", runs / "audio", "-i", tmp_path / "clipped.wav", "--task", "declip:0.6", "-o", out, *FAST)
    restored, _ = soundfile.read(out)
    clipped = np.abs(samples) >= 0.6 - 1 / 32768
    assert np.abs(restored[~clipped] - samples[~clipped]).max() < 3 / 32768
    assert (np.abs(restored[clipped]) >= 0.6 - 2 / 32768).all()
    assert (np.sign(restored[clipped]) == np.sign(samples[clipped])).all()
    # A level the recording never reaches is said, not silently ignored.
    result = run("restore", "audio", "-m", runs / "audio", "-i", tmp_path / "clipped.wav", "--task", "declip:0.9",
                 "-o", tmp_path / "same.wav", *FAST)
    assert "no sample reaches ±0.9" in result.stderr.decode()


def test_eval_restore_reports_fidelity_beside_the_baselines(runs):
    lines = [json.loads(line) for line in run("eval", "image", "-m", runs / "image", "--restore", "upscale:4",
                                               "--samples", 4, *FAST).stdout.decode().splitlines()]
    sets = {line["set"] for line in lines if line["metric"] == "psnr"}
    assert sets == {"diffkit ddnm ddpm-4", "A⁺y", "bicubic", "lanczos"}
    assert {line["metric"] for line in lines} == {"consistency_rms", "psnr", "ssim", "fd"}
    assert next(line for line in lines if line.get("set") == "held-out")["metric"] == "fd"  # the floor
    lines = [json.loads(line) for line in run("eval", "audio", "-m", runs / "audio", "--restore", "denoise:0.1",
                                               "--samples", 4, *FAST).stdout.decode().splitlines()]
    assert {(line["metric"], line.get("set")) for line in lines} >= {("si_sdr", "degraded input"), ("lsd", "degraded input"),
                                                                    ("si_sdr", "diffkit ddnm ddpm-4")}
    noisy = next(line["value"] for line in lines if line["metric"] == "si_sdr" and line["set"] == "degraded input")
    assert 5 < noisy < 25  # noise of 0.1 on clips of about 0.3 RMS


BAD = {  # (modality, run, input maker, extra args) -> what the error names
    "unknown task": ("image", "image", lambda t: _png(t / "in.png", 16, 16), ["--task", "sharpen"], "upscale:FACTOR, colorize"),
    "an audio task on an image run": ("image", "image", lambda t: _png(t / "in.png", 16, 16), ["--task", "bandwidth:4000"], "unknown task 'bandwidth'"),
    "an image run under audio": ("audio", "image", lambda t: _wav(t / "in.wav", 0.3, RATE), ["--task", "denoise:0.1"], "not audio"),
    "factor not dividing the model": ("image", "image", lambda t: _png(t / "in.png", 8, 8), ["--task", "upscale:3"], "not a multiple of 3"),
    "factor too large": ("image", "image", lambda t: _png(t / "in.png", 8, 8), ["--task", "upscale:32"], "upscale:32"),
    "factor not a number": ("image", "image", lambda t: _png(t / "in.png", 8, 8), ["--task", "upscale:two"], "an integer"),
    "upscale without a factor": ("image", "image", lambda t: _png(t / "in.png", 8, 8), ["--task", "upscale"], "upscale:FACTOR"),
    "colorize with an argument": ("image", "image", lambda t: _png(t / "in.png", 8, 8), ["--task", "colorize:1"], "write it as colorize"),
    "a task twice": ("image", "image", lambda t: _png(t / "in.png", 16, 16), ["--task", "denoise:0.1,denoise:0.2"], "twice"),
    "sigma above range": ("image", "image", lambda t: _png(t / "in.png", 16, 16), ["--task", "denoise:2"], "denoise:2"),
    "sigma negative": ("image", "image", lambda t: _png(t / "in.png", 16, 16), ["--task", "denoise:-0.1"], "denoise:-0.1"),
    "blur too wide": ("image", "image", lambda t: _png(t / "in.png", 16, 16), ["--task", "deblur:40"], "deblur:40"),
    "a grey model asked to colorize": ("image", "grey", lambda t: _png(t / "in.png", 16, 16, 1), ["--task", "colorize"], "needs an RGB model"),
    "input smaller than the model": ("image", "image", lambda t: _png(t / "in.png", 12, 12), ["--task", "denoise:0.1"], "smaller than the model's"),
    "unknown method": ("image", "image", lambda t: _png(t / "in.png", 16, 16), ["--task", "denoise:0.1", "--method", "magic"], "ddnm"),
    "a corrupt image": ("image", "image", lambda t: (t / "bad.png").write_bytes(b"\x89PNG junk") and t / "bad.png", ["--task", "denoise:0.1"], "not a readable image"),
    "an image task on audio": ("audio", "audio", lambda t: _wav(t / "in.wav", 0.3, RATE), ["--task", "upscale:2"], "bandwidth:HZ, denoise:SIGMA, declip:LEVEL"),
    "bandwidth above Nyquist": ("audio", "audio", lambda t: _wav(t / "in.wav", 0.3, RATE), ["--task", "bandwidth:4000"], "bandwidth:4000"),
    "declip level out of range": ("audio", "audio", lambda t: _wav(t / "in.wav", 0.3, RATE), ["--task", "declip:1.5"], "declip:1.5"),
    "declip with bandwidth": ("audio", "audio", lambda t: _wav(t / "in.wav", 0.3, RATE), ["--task", "declip:0.5,bandwidth:2000"], "denoise only"),
    "a corrupt recording": ("audio", "audio", lambda t: (t / "bad.wav").write_bytes(b"RIFF junk") and t / "bad.wav", ["--task", "denoise:0.1"], "not a readable sound file"),
    "eval with an unknown task": ("image", "image", None, ["--restore", "sharpen"], "unknown task"),
    "eval audio, sigma out of range": ("audio", "audio", None, ["--restore", "denoise:5"], "denoise:5"),
    "eval with --samples 0": ("image", "image", None, ["--restore", "upscale:2", "--samples", 0], "--samples"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_restoration_input_gives_one_error_line_and_no_output(case, runs, tmp_path):
    modality, run_name, make_input, extra, says = BAD[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    if make_input is None:
        args = ["eval", modality, "-m", runs / run_name, *extra]
    else:
        args = ["restore", modality, "-m", runs / run_name, "-i", make_input(inputs), *extra,
                "-o", tmp_path / f"out{'.png' if modality == 'image' else '.wav'}"]
    line = assert_bad_input(args, b"", tmp_path)
    assert says in line, line


def test_restore_is_refused_on_a_run_of_another_modality(tmp_path):
    line = assert_bad_input(["restore", "image", "-m", foreign_run(tmp_path, "text"), "-i", "x.png", "--task", "colorize",
                             "-o", tmp_path / "out.png"], b"", tmp_path)
    assert "modality text" in line
