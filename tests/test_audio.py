"""The audio modality end to end on 0.25 s clips at 8 kHz, plus its data, windows and metrics on their own."""

import io
import json
import math

import numpy as np
import pytest
import soundfile
import torch
from cli import assert_bad_input, assert_stdin_error_in_a_real_process, foreign_run, run

RATE = 8000
TINY = ["--sample-rate", RATE, "--seconds", 0.25, "--width", 8, "--mults", "1,2,2", "--factor", 4, "--blocks", 1,
        "--dilations", "1,2", "--attention", 1, "--batch-size", 4, "--timesteps", 50, "-q"]
FAST = ["--steps", 4, "-q"]


def pcm(data_or_path) -> tuple[np.ndarray, int]:
    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    samples, rate = soundfile.read(source, dtype="int16")
    return samples, rate


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tones"
    run("train", "audio", "--out", out, "--steps", 20, "--class-cond", "--preview-every", 20,
        "--checkpoint-every", 10, *TINY)
    return out


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """0.6 s of full-scale 16-bit noise at the model's rate: longer than the 0.25 s window."""
    path = tmp_path_factory.mktemp("inputs") / "in.wav"
    samples = np.random.default_rng(0).integers(-32768, 32768, int(0.6 * RATE)).astype(np.int16)
    soundfile.write(path, samples, RATE, subtype="PCM_16")
    return path


def test_train_writes_a_complete_run(trained):
    config = json.loads((trained / "config.json").read_text())
    assert config["modality"] == "audio" and config["data"]["classes"] == ["sine", "organ", "pluck"]
    assert config["data"]["length"] == config["data"]["window"] == 2000 and config["model"]["dims"] == 1
    previews = sorted(p.name for p in (trained / "previews").iterdir())
    assert previews == ["step-0000020-0.wav", "step-0000020-1.wav", "step-0000020-2.wav", "step-0000020-3.wav",
                        "step-0000020.png"]
    samples, rate = pcm(trained / "previews" / "step-0000020-0.wav")
    assert rate == RATE and samples.shape == (2000,)
    summary = json.loads(run("info", trained, "--json").stdout)
    assert summary["modality"] == "audio" and summary["step"] == 20 and summary["seconds"] == 0.25


def test_sample_to_a_folder_a_file_and_stdout(trained, tmp_path):
    paths = run("sample", "audio", "-m", trained, "-n", 2, *FAST, "-o", tmp_path / "clips").stdout.decode().split()
    assert len(paths) == 2 and all(pcm(p)[0].shape == (2000,) for p in paths)
    joined = run("sample", "audio", "-m", trained, "-n", 2, *FAST, "-o", "-").stdout
    again = run("sample", "audio", "-m", trained, "-n", 2, *FAST, "-o", "-").stdout
    samples, rate = pcm(joined)
    assert joined == again and rate == RATE and samples.shape == (2000 + RATE // 4 + 2000,)
    assert (samples[:2000] == pcm(paths[0])[0]).all()  # same seed, same clip, whatever the destination
    run("sample", "audio", "-m", trained, "-n", 1, "--seconds", 0.5, "--class", "organ", "--guidance", 2, *FAST,
        "-o", tmp_path / "long.wav")
    assert pcm(tmp_path / "long.wav")[0].shape == (4000,)  # another length than training's


def test_inpaint_keeps_every_unmasked_sample_across_windows(trained, recording, tmp_path):
    out = run("inpaint", "audio", "-m", trained, "-i", recording, "--mask", "0.10-0.20,0.45-0.5", *FAST,
              "--jump", 2, "--resample", 2, "-o", "-").stdout
    result, original = pcm(out)[0], pcm(recording)[0]
    regenerate = np.zeros(len(original), dtype=bool)
    regenerate[800:1600] = regenerate[3600:4000] = True
    assert result.shape == original.shape
    assert (result[~regenerate] == original[~regenerate]).all()
    assert (result[regenerate] != original[regenerate]).mean() > 0.9
    mask = np.zeros(len(original), dtype=np.int8)
    mask[100:300] = 1
    np.save(tmp_path / "mask.npy", mask)
    out = run("inpaint", "audio", "-m", trained, "-i", "-", "--mask", tmp_path / "mask.npy", *FAST,
              "--jump", 2, "--resample", 1, "-o", "-", stdin=recording.read_bytes()).stdout
    assert (pcm(out)[0][mask == 0] == original[mask == 0]).all()


def test_style_at_zero_returns_the_input_and_keeps_the_length(trained, recording):
    same = run("style", "audio", "-m", trained, "-i", recording, "--strength", 0, *FAST, "-o", "-").stdout
    assert (pcm(same)[0] == pcm(recording)[0]).all()
    changed = run("style", "audio", "-m", trained, "-i", recording, "--strength", 0.5, *FAST, "-o", "-").stdout
    assert pcm(changed)[0].shape == pcm(recording)[0].shape and not (pcm(changed)[0] == pcm(recording)[0]).all()


def test_style_bridge_converts_a_long_recording_in_windows(trained, recording):
    out = run("style", "audio", "-m", trained, "-i", recording, "--from-class", "sine", "--class", "organ", *FAST,
              "-o", "-").stdout
    assert pcm(out)[0].shape == pcm(recording)[0].shape and not (pcm(out)[0] == pcm(recording)[0]).all()


def test_a_stereo_48k_input_is_converted_not_rejected(trained, tmp_path):
    t = np.arange(int(0.3 * 48000)) / 48000
    tone = 0.5 * np.sin(2 * math.pi * 440 * t)
    soundfile.write(tmp_path / "stereo.wav", np.stack([tone, tone], axis=1), 48000, subtype="PCM_16")
    out = run("style", "audio", "-m", trained, "-i", tmp_path / "stereo.wav", "--strength", 0, "-o", "-").stdout
    samples, rate = pcm(out)
    assert rate == RATE and samples.shape == (int(0.3 * RATE),)  # mono, at the model's rate
    assert abs(np.abs(samples[100:-100]).max() / 32768 - 0.5) < 0.02


def test_eval_reports_bits_and_spectral_figures_between_real_and_noise(trained):
    out = run("eval", "audio", "-m", trained, "-n", 4, "--strata", 4, "--samples", 12, "--reference", *FAST[:2],
              "--json", "-q").stdout
    records = [json.loads(line) for line in out.decode().splitlines()]
    assert records[0]["metric"] == "nll_bits_per_sample" and 0 < records[0]["value"] < 32
    scores = {(r["metric"], r["of"].split(",")[0].split(" (")[0]): r["value"] for r in records[1:]}
    assert scores["mel_frechet", "white noise"] > 3 * scores["mel_frechet", "held-out clips"]
    assert scores["spectral_flatness", "white noise"] > 0.4 > 0.1 > scores["spectral_flatness", "held-out clips"]
    assert scores["on_pitch_share", "held-out clips"] > 0.8 > 0.3 > scores["on_pitch_share", "white noise"]
    assert scores["crepe_pitch_distance", "held-out clips"] < scores["crepe_pitch_distance", "white noise"]


BAD = {
    "missing model dir": lambda t, w, tmp: ["sample", "audio", "-m", tmp / "nope", "-o", tmp / "out.wav"],
    "corrupt input wav": lambda t, w, tmp: ["style", "audio", "-m", t, "-i", _corrupt(tmp), "-o", tmp / "out.wav"],
    "empty file": lambda t, w, tmp: ["style", "audio", "-m", t, "-i", _empty(tmp), "-o", tmp / "out.wav"],
    "non-audio on stdin": lambda t, w, tmp: ["inpaint", "audio", "-m", t, "-i", "-", "--mask", "0-0.1", "-o", tmp / "out.wav"],
    "range outside the input": lambda t, w, tmp: ["inpaint", "audio", "-m", t, "-i", w, "--mask", "0.5-0.7", "-o", tmp / "out.wav"],
    "malformed range": lambda t, w, tmp: ["inpaint", "audio", "-m", t, "-i", w, "--mask", "0.1:0.2", "-o", tmp / "out.wav"],
    "mask of wrong length": lambda t, w, tmp: ["inpaint", "audio", "-m", t, "-i", w, "--mask", _short_mask(tmp), "-o", tmp / "out.wav"],
    "pickled npy mask": lambda t, w, tmp: ["inpaint", "audio", "-m", t, "-i", w, "--mask", _pickled_mask(tmp), "-o", tmp / "out.wav"],
    "strength above 1": lambda t, w, tmp: ["style", "audio", "-m", t, "-i", w, "--strength", 1.5, "-o", tmp / "out.wav"],
    "zero seconds": lambda t, w, tmp: ["sample", "audio", "-m", t, "--seconds", 0, "-o", tmp / "out.wav"],
    "unknown class": lambda t, w, tmp: ["sample", "audio", "-m", t, "--class", "cello", "-o", tmp / "out.wav"],
    "unknown --from-class": lambda t, w, tmp: ["style", "audio", "-m", t, "-i", w, "--from-class", "cello", "--class", "organ", "-o", tmp / "out.wav"],
    "bridge with ddpm": lambda t, w, tmp: ["style", "audio", "-m", t, "-i", w, "--from-class", "sine", "--class", "organ", "--sampler", "ddpm", "-o", tmp / "out.wav"],
    "an image run": lambda t, w, tmp: ["sample", "audio", "-m", foreign_run(tmp, "image"), "-o", tmp / "out.wav"],
    "unknown builtin": lambda t, w, tmp: ["train", "audio", "--out", tmp / "out.wav", "--data", "builtin:cats"],
    "empty data folder": lambda t, w, tmp: ["train", "audio", "--out", tmp / "out.wav", "--data", tmp],
    "bad normalisation": lambda t, w, tmp: ["train", "audio", "--out", tmp / "out.wav", "--normalise", "loud"],
}


def _corrupt(tmp):
    (tmp / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(30))
    return tmp / "corrupt.wav"


def _empty(tmp):
    (tmp / "empty.wav").write_bytes(b"")
    return tmp / "empty.wav"


def _short_mask(tmp):
    np.save(tmp / "short.npy", np.ones(10))
    return tmp / "short.npy"


def _pickled_mask(tmp):
    np.save(tmp / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return tmp / "objects.npy"


@pytest.mark.parametrize("case", BAD)
def test_bad_input_gives_one_error_line_and_no_output(case, trained, recording, tmp_path):
    assert_bad_input(BAD[case](trained, recording, tmp_path), b"plain text, not a sound", tmp_path)


def test_a_bad_input_in_a_real_process_exits_2_without_a_traceback(trained, tmp_path):
    assert_stdin_error_in_a_real_process("audio", trained, tmp_path / "out.wav")


# ---------------------------------------------------------------- pieces


def test_builtin_sets_are_deterministic_labelled_and_tones_are_on_the_scale():
    from diffkit.audio.data import TONE_HZ, open_data
    from diffkit.metrics.audio import on_pitch_share

    tones = open_data("builtin:tones", 16000, 16000, seed=1)
    a, labels = tones.batch(torch.arange(30), torch.Generator())
    b, _ = tones.batch(torch.arange(30), torch.Generator())
    assert a.shape == (30, 1, 16000) and torch.equal(a, b) and set(labels.tolist()) == {0, 1, 2}
    assert a.abs().max() <= 1 and on_pitch_share(a, 16000, TONE_HZ) > 0.9
    drums, labels = open_data("builtin:drums", 8000, 4000).batch(torch.arange(12), torch.Generator())
    assert drums.shape == (12, 1, 4000) and set(labels.tolist()) == {0, 1, 2} and drums.abs().max() <= 1


def test_folder_data_is_mono_resampled_normalised_and_replaces_broken_files(tmp_path, capfd):
    from diffkit.audio.data import open_data

    t = np.arange(22050) / 22050
    stereo = np.stack([0.2 * np.sin(2 * math.pi * 440 * t)] * 2, axis=1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    soundfile.write(tmp_path / "a" / "long.wav", stereo, 22050)             # 1 s, stereo, another rate
    soundfile.write(tmp_path / "b" / "short.flac", stereo[:2205, 0], 22050)  # 0.1 s: zero-padded
    (tmp_path / "b" / "broken.wav").write_bytes(b"not a sound")
    data = open_data(str(tmp_path), 8000, 4000, class_cond=True)
    assert data.classes == ["a", "b"] and len(data) == 3  # listed, not decoded: broken.wav is found when read
    clips, labels = data.batch(torch.tensor([0, 1, 2]), torch.Generator().manual_seed(0))
    assert clips.shape == (3, 1, 4000) and labels.tolist() == [0, 1, 1]
    assert torch.equal(clips[1], clips[2])  # broken.wav (1) replaced by the next readable file
    warnings = capfd.readouterr().err.splitlines()
    assert len(warnings) == 1 and "broken.wav: unreadable sound file, replaced" in warnings[0]
    assert math.isclose(clips[0].abs().max().item(), 0.95, rel_tol=0.01)  # peak-normalised
    assert clips[2, 0, 900:].abs().max() == 0 and clips[2, 0, :700].abs().max() > 0.5
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="no sound files"):
        open_data(str(tmp_path / "empty"), 8000, 4000)


def test_a_window_of_a_long_recording_is_that_of_the_whole_file_resampled(tmp_path):
    """Windows are read by seeking: an hour costs a window's memory, and the samples are those the
    whole file resampled would give."""
    import torchaudio.functional

    from diffkit.audio.data import open_data

    rng = np.random.default_rng(0)
    wave = 0.2 * np.sin(2 * math.pi * 440 * np.arange(5 * 22050) / 22050) + 0.05 * rng.standard_normal(5 * 22050)
    soundfile.write(tmp_path / "long.wav", wave, 22050, subtype="FLOAT")
    data = open_data(str(tmp_path), 8000, 4000)
    whole = torchaudio.functional.resample(torch.from_numpy(wave).float(), 22050, 8000) * (0.95 / np.abs(wave).max())
    for seed in range(4):
        clip, _ = data.batch(torch.tensor([0]), torch.Generator().manual_seed(seed))
        start = int(torch.randint(0, 5 * 8000 - 4000 + 1, (), generator=torch.Generator().manual_seed(seed)))
        assert (clip[0, 0] - whole[start:start + 4000]).abs().max() < 1e-5


def test_inpaint_windows_fill_every_masked_sample_with_context_on_both_sides():
    from diffkit.audio.pipeline import inpaint_windows

    wave = torch.arange(1000, dtype=torch.float32)
    regenerate = torch.zeros(1000, dtype=torch.bool)
    regenerate[150:700] = True
    seen = []

    def fill(known, keep):
        seen.append((len(known), int(keep.sum())))
        return torch.where(keep, known, torch.full_like(known, -1.0))

    out = inpaint_windows(wave, regenerate, 200, fill)
    assert torch.equal(out[~regenerate], wave[~regenerate]) and (out[regenerate] == -1).all()
    assert all(length == 200 and kept > 0 for length, kept in seen)  # every window saw some known audio


def test_pitch_flatness_and_mel_distance_against_known_answers(gen):
    from diffkit.metrics.audio import cents_off, dominant_pitch, mel_frechet, spectral_flatness

    t = torch.arange(16000) / 16000
    organ = sum(torch.sin(2 * math.pi * k * 440 * t) / k for k in range(1, 6))
    assert cents_off(dominant_pitch(organ, 16000), (440.0,)) < 5
    assert cents_off(dominant_pitch(torch.sin(2 * math.pi * 261.63 * t), 16000), (261.63,)) < 5
    noise = torch.randn(16000, generator=gen)
    assert abs(spectral_flatness(noise, 16000) - 0.56) < 0.05 and spectral_flatness(organ, 16000) < 0.05
    tones = torch.stack([torch.sin(2 * math.pi * f * t) for f in (300, 400, 500, 600)])[:, None]
    other = torch.stack([torch.sin(2 * math.pi * f * t) for f in (310, 390, 510, 590)])[:, None]
    noises = torch.randn(4, 1, 16000, generator=gen)
    assert mel_frechet(tones, other, 16000) < mel_frechet(tones, noises, 16000) / 5


def test_crepe_hears_the_pitch_of_a_tone_and_little_voicing_in_noise(gen):
    from diffkit.metrics.audio import crepe_pitches, pitch_distance

    t = torch.arange(8000) / 8000
    cents, voiced = crepe_pitches(0.5 * torch.sin(2 * math.pi * 440 * t)[None, None], 8000)
    assert voiced > 0.8 and cents.abs().median() < 20  # A4 is 0 cents
    octave, _ = crepe_pitches(0.5 * torch.sin(2 * math.pi * 880 * t)[None, None], 8000)
    assert abs(pitch_distance(cents, octave) - 1200) < 40
    _, noise_voiced = crepe_pitches(0.3 * torch.randn(1, 1, 8000, generator=gen), 8000)
    assert noise_voiced < 0.3
