"""`diffkit restore audio`: the options of audio restoration (diffkit.audio.restoration) and the command
over it."""

from typing import Annotated

import typer

from diffkit.audio.restoration import parse_task, restore_wave
from diffkit.core.spec import DEFAULT_METHOD
from diffkit.options import (Common, Guidance, Label, Method, RestoreSampling, Signing, TrajectoryPath, class_labels,
                             with_options)

Model = Annotated[str, typer.Option("--model", "-m", help="Run directory written by `diffkit train audio`.")]
Input = Annotated[str, typer.Option("--input", "-i", help="The degraded recording (WAV, FLAC, OGG) at any rate, or - for stdin.")]
Output = Annotated[str, typer.Option("--output", "-o", help="WAV file, a folder (each result under a new name), or - for stdout.")]
Task = Annotated[str, typer.Option(help="What happened to the recording, comma-separated: bandwidth:HZ, denoise:SIGMA, declip:LEVEL.")]


@with_options(Common, RestoreSampling, Signing)
def restore(run: Model, input: Input, task: Task, method: Method = DEFAULT_METHOD,
            jump: Annotated[int, typer.Option(help="RePaint jump length in steps (with --resample).")] = 5,
            resample: Annotated[int, typer.Option(help="Repeats of each jump (RePaint's time travel; 1 = none).")] = 1,
            label: Label = None, guidance: Guidance = 1.0, output: Output = "-", trajectory_path: TrajectoryPath = None,
            *, common: Common, sampling: RestoreSampling, signing: Signing):
    """Restore a degraded recording: bandwidth extension, denoising, declipping, or a combination."""
    from diffkit.audio import codec
    from diffkit.audio import pipeline
    from diffkit.audio.data import read_audio
    from diffkit.console import warn
    from diffkit.core.observe import METHODS
    from diffkit.errors import DiffkitError, choose
    from diffkit.io import Destination, display_name, result_stem
    from diffkit.runs import provenance_of
    from diffkit.trajectory import trajectory_target

    choose("restoration method", method, METHODS)
    if jump < 1 or resample < 1:
        raise DiffkitError("--jump and --resample must be at least 1")
    destination = Destination.of(output, ".wav", signing.credentials())
    trajectory = trajectory_target(trajectory_path, ".png")
    loaded = pipeline.load(run, common.device)
    rate = loaded.config.data.sample_rate
    degradation = parse_task(task, rate)
    wave = read_audio(input, rate)
    if degradation.clip is not None and not degradation.clipped(wave).any():
        warn(f"{display_name(input)}: no sample reaches ±{degradation.clip:g} (its peak is {wave.abs().max():.4f}), "
             "so declip:LEVEL has nothing to restore")
    restored, error, rms = restore_wave(loaded, wave, degradation, sampling, quiet=common.quiet, method=method,
                                        labels=class_labels(loaded, label, 1, guidance), guidance=guidance,
                                        jump=jump, resample=resample, trajectory=trajectory)
    stamp = provenance_of(loaded, "restore audio", sampling, input, label=label, guidance=guidance, task=task,
                          method=method)
    if trajectory is not None:
        pipeline.write_trajectory(trajectory_path, trajectory, rate, stamp)
    destination.stamped(stamp).write(codec.wav(restored, rate), result_stem(input, "restored"), common.json,
                                     input=input, task=task, method=method, consistency_error=error,
                                     consistency_rms=rms)
