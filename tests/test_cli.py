"""End-to-end CLI runs on tiny settings, through the installed `diffkit` entry point."""

import csv
import io
import json
import time

import pytest
from cli import run

VERBS = ["train", "sample", "inpaint", "style", "eval"]


def rows(data: bytes):
    return [[float(v) for v in r] for r in csv.reader(io.StringIO(data.decode())) if r]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ring"
    run("train", "points", "--out", out, "--steps", 150, "--hidden", 64, "--timesteps", 100, "-q")
    return out


@pytest.mark.parametrize("args", [[], *[[verb] for verb in VERBS], *[[verb, m] for verb in VERBS for m in ("points", "image")],
                                  ["info"]])
def test_help_of_every_verb(args):
    result = run(*args, "--help")
    assert b"Usage" in result.stdout


def test_help_starts_fast():
    start = time.perf_counter()
    run("--help")
    assert time.perf_counter() - start < 3.0  # generous for a loaded CI machine; ~0.2 s here


def test_train_writes_a_complete_run(trained):
    assert {"config.json", "model.safetensors", "metrics.jsonl"} <= {p.name for p in trained.iterdir()}
    config = json.loads((trained / "config.json").read_text())
    assert config["modality"] == "points" and config["diffusion"]["timesteps"] == 100
    assert not [p for p in trained.iterdir() if p.name.endswith(".tmp")]


def test_sample_to_stdout_is_data_only_and_reproducible(trained):
    first = run("sample", "points", "-m", trained, "-n", 7, "--steps", 5, "--seed", 3)
    again = run("sample", "points", "-m", trained, "-n", 7, "--steps", 5, "--seed", 3, "-q")
    points = rows(first.stdout)
    assert len(points) == 7 and all(len(p) == 2 for p in points)
    assert first.stdout == again.stdout
    assert b"sample" in first.stderr and again.stderr == b""


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++2m", "dpm++3m", "heun"])
def test_every_sampler_from_the_cli(trained, tmp_path, sampler):
    out = tmp_path / "s.csv"
    run("sample", "points", "-m", trained, "-n", 5, "--steps", 4, "--sampler", sampler, "-o", out, "-q")
    assert len(rows(out.read_bytes())) == 5


def test_json_lines(trained):
    result = run("sample", "points", "-m", trained, "-n", 3, "--steps", 3, "--json", "-q")
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert len(lines) == 3 and all(len(line["point"]) == 2 for line in lines)
    info = json.loads(run("info", trained, "--json").stdout)
    assert info["modality"] == "points" and info["parameters"] > 1000


def test_inpaint_keeps_the_kept_column_and_style_at_zero_returns_the_input(trained):
    given = b"0.5,9\n-0.25,9\n"
    filled = rows(run("inpaint", "points", "-m", trained, "-i", "-", "--keep", "0", "--steps", 10, "-q", stdin=given).stdout)
    assert [p[0] for p in filled] == [0.5, -0.25] and all(p[1] != 9 for p in filled)
    same = rows(run("style", "points", "-m", trained, "-i", "-", "--strength", "0", "-q", stdin=given).stdout)
    assert same == [[0.5, 9.0], [-0.25, 9.0]]


def test_eval_reports_the_bound_and_writes_a_plot(trained, tmp_path):
    samples = tmp_path / "s.csv"
    run("sample", "points", "-m", trained, "-n", 200, "--steps", 10, "-o", samples, "-q")
    result = run("eval", "points", "-m", trained, "-n", 200, "--samples", samples, "--plot", tmp_path / "p.png", "--json", "-q")
    metrics = {r["metric"]: r["value"] for r in map(json.loads, result.stdout.decode().splitlines())}
    assert 0 < metrics["sliced_w2"] < float("inf") and abs(metrics["nll_bits_per_dim"]) < 20
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The run has T = 100: 99 strata or more is the exact bound itself; fewer estimate it (test_diffusion
    # checks that estimate is unbiased) from one timestep per stratum.
    def bound(strata):
        return json.loads(run("eval", "points", "-m", trained, "-n", 200, "--strata", strata, "--json", "-q").stdout)
    exact, estimate = bound(99), bound(50)
    assert exact["value"] == metrics["nll_bits_per_dim"] and exact["strata"] == 99
    assert estimate["strata"] == 50 and estimate["value"] != metrics["nll_bits_per_dim"] and abs(estimate["value"]) < 20


@pytest.mark.parametrize("args,message", [
    (["sample", "points", "-m", "{run}", "--sampler", "euler"], "unknown sampler 'euler'; choose one of: ddim, ddpm"),
    (["sample", "points", "-m", "{run}", "--steps", "0"], "--steps must be at least 1"),
    (["sample", "points", "-m", "{run}", "--eta", "0.5"], "--eta applies to the ddim sampler"),
    (["sample", "points", "-m", "{run}", "--spacing", "random"], "unknown timestep spacing"),
    (["sample", "points", "-m", "{missing}"], "no such run directory"),
    (["style", "points", "-m", "{run}", "-i", "-", "--strength", "1.5"], "strength must be in [0, 1]"),
    (["style", "points", "-m", "{run}", "-i", "{missing}"], "no such file"),
    (["inpaint", "points", "-m", "{run}", "-i", "-", "--keep", "5"], "--keep: columns must lie in 0..1"),
    (["train", "points", "--out", "{tmp}/x", "--schedule", "quadratic"], "unknown schedule 'quadratic'"),
    (["train", "points", "--out", "{tmp}/x", "--data", "builtin:nope"], "unknown built-in data"),
    (["train", "points", "--out", "{tmp}/x", "--hidden", "0"], "--hidden must be at least 1"),
    (["sample", "points", "-m", "{tmp}"], "not a diffkit run (no config.json)"),
    (["eval", "points", "-m", "{run}", "--strata", "0"], "--strata must be at least 1"),
])
def test_user_errors_are_one_line_and_exit_2(trained, tmp_path, args, message):
    args = [a.format(run=trained, missing=tmp_path / "missing", tmp=tmp_path) for a in args]
    result = run(*args, stdin=b"1,2\n", check=False)
    err = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2, result.stderr.decode()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert "Traceback" not in result.stderr.decode()


def test_bad_csv_names_the_file_and_writes_no_output(trained, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2\nnot,numbers\n")
    out = tmp_path / "out.csv"
    result = run("style", "points", "-m", trained, "-i", bad, "-o", out, check=False)
    assert result.returncode == 2 and f"error: {bad}:2: not a row of 2 numbers" in result.stderr.decode()
    assert not out.exists() and not list(tmp_path.glob(".out.csv*"))


def test_corrupt_weights_are_rejected_without_unpickling(trained, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / "model.safetensors").write_bytes(b"\x80\x04\x95pickle-ish")
    result = run("sample", "points", "-m", copy, check=False)
    assert result.returncode == 2 and "not a safetensors file" in result.stderr.decode()


def test_compiled_and_bf16_training_follow_the_plain_run(tmp_path):
    """The GPU path's options, on CPU: --compile (torch.compile) and --precision bf16 (autocast) train the
    same network along the same loss curve, and their runs sample like any other."""
    args = ["--steps", 8, "--hidden", 32, "--batch-size", 64, "--timesteps", 50, "--log-every", 1, "-q"]

    def losses(name, *extra):
        run("train", "points", "--out", tmp_path / name, *args, *extra)
        return [json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    plain, compiled, bf16 = losses("plain", "--precision", "fp32"), losses("compiled", "--precision", "fp32",
                                                                          "--compile"), losses("bf16", "--precision", "bf16")
    assert len(plain) == 8 and plain == pytest.approx(compiled, rel=1e-4)
    assert plain != bf16 and plain == pytest.approx(bf16, rel=0.01)  # bf16 did run, and rounds only
    for name in ("compiled", "bf16"):
        assert len(run("sample", "points", "-m", tmp_path / name, "-n", 3, "--steps", 4, "-q").stdout.splitlines()) == 3
