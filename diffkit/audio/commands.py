"""`diffkit train|sample|inpaint|style|eval audio`: the audio modality's commands.

The network is the shared U-Net in one dimension over raw mono waveforms: strided down-sampling by
`--factor` per level, dilated convolutions in the blocks, attention only at the coarsest levels. It is
fully convolutional apart from attention (which takes any length), so it samples clips of any length; a
length is padded up to a multiple of the total down-sampling and trimmed afterwards.

Only typer at import time; torch, soundfile and the core load inside the commands.
"""

from typing import Annotated, Optional

import typer

from diffkit.audio import pipeline
from diffkit.options import (Column, Common, FromClass, Guidance, InversionIterations, Label, LabelColumn, Preset,
                             Sampling, Signing, Strength, StyleMethod, Training, TrajectoryPath, class_labels, style_plan,
                             with_defaults, with_options)


Model = Annotated[str, typer.Option("--model", "-m", help="Run directory written by `diffkit train audio`.")]
Output = Annotated[str, typer.Option("--output", "-o", help="WAV file, a folder (each result under a new name), or - for stdout.")]
Input = Annotated[str, typer.Option("--input", "-i", help="Sound file (WAV, FLAC, OGG), or - for stdin.")]

AudioTraining = with_defaults(Training, **pipeline.TRAINING)


@with_options(AudioTraining, Common)
def train(
    data: Annotated[str, typer.Option(help="Sound folder (sub-folders = classes), or builtin:tones / builtin:drums.")] = "builtin:tones",
    sample_rate: Annotated[int, typer.Option(help="Samples per second the model works at.")] = 16000,
    seconds: Annotated[float, typer.Option(help="Length of the training clips.")] = 1.0,
    normalise: Annotated[str, typer.Option(help="Loudness of each file: peak, rms or none.")] = "peak",
    class_cond: Annotated[bool, typer.Option("--class-cond", help="Condition on class labels (enables --guidance).")] = False,
    column: Column = None,
    label_column: LabelColumn = None,
    label_dropout: Annotated[float, typer.Option(help="Share of labels dropped for classifier-free guidance.")] = 0.1,
    preset: Preset = "small",
    width: Annotated[Optional[int], typer.Option(help="U-Net channels at full rate; default: the preset's.")] = None,
    mults: Annotated[Optional[str], typer.Option(help="Channel multiplier per level, comma-separated; default: the preset's.")] = None,
    factor: Annotated[int, typer.Option(help="Down-sampling factor between levels.")] = 4,
    blocks: Annotated[Optional[int], typer.Option(help="Residual blocks per level; default: the preset's.")] = None,
    dilations: Annotated[str, typer.Option(help="Dilations of a level's blocks, cycled.")] = "1,3",
    attention: Annotated[int, typer.Option(help="Coarsest levels with self-attention (0: the middle only).")] = 1,
    dropout: Annotated[float, typer.Option(help="Dropout in the residual blocks.")] = 0.0,
    *, training: AudioTraining, common: Common,
):
    """Train a 1-D U-Net on waveforms; writes config.json, model.safetensors, state/, metrics.jsonl, previews/."""
    pipeline.train(training, data=data, sample_rate=sample_rate, seconds=seconds, normalise=normalise,
                   class_cond=class_cond, column=column, label_column=label_column, label_dropout=label_dropout,
                   preset=preset, width=width, mults=mults, factor=factor, blocks=blocks, dilations=dilations,
                   attention=attention, dropout=dropout, device=common.device, quiet=common.quiet,
                   json_out=common.json)


def _seconds_to_samples(run, seconds: float | None) -> int:
    from diffkit.errors import DiffkitError

    spec = run.config.data
    if seconds is None:
        return spec.length
    if not 0 < seconds <= 600:
        raise DiffkitError(f"--seconds must be in (0, 600], got {seconds}")
    return max(1, round(seconds * spec.sample_rate))


@with_options(Common, Sampling, Signing)
def sample(run: Model, n: Annotated[int, typer.Option("-n", help="How many clips.")] = 4,
           seconds: Annotated[Optional[float], typer.Option(help="Clip length; default: the training length.")] = None,
           label: Label = None, guidance: Guidance = 1.0,
           output: Annotated[str, typer.Option("--output", "-o", help="A folder (one WAV each, paths on stdout), a .wav file or - (WAV on stdout); a single file holds the clips one after another.")] = "-",
           trajectory_path: TrajectoryPath = None, *, common: Common, sampling: Sampling, signing: Signing):
    """Draw new clips; the same seed gives the same clips."""
    from diffkit.audio import codec
    from diffkit.errors import DiffkitError
    from diffkit.io import Destination
    from diffkit.runs import provenance_of
    from diffkit.trajectory import trajectory_target

    if n < 1:
        raise DiffkitError(f"-n must be at least 1, got {n}")
    destination = Destination.of(output, ".wav", signing.credentials())
    trajectory = trajectory_target(trajectory_path, ".png")
    loaded = pipeline.load(run, common.device)
    rate = loaded.config.data.sample_rate
    waves = pipeline.waves(loaded, n, _seconds_to_samples(loaded, seconds), sampling, quiet=common.quiet,
                   labels=class_labels(loaded, label, n, guidance), guidance=guidance, trajectory=trajectory)
    stem = f"seed{sampling.seed}"
    stamp = provenance_of(loaded, "sample audio", sampling, label=label, guidance=guidance, seconds=seconds)
    if trajectory is not None:
        pipeline.write_trajectory(trajectory_path, trajectory, rate, stamp)
    destination = destination.stamped(stamp)
    if destination.kind == "folder":
        destination.write_each((codec.wav(w, rate) for w in waves), stem, common.json, seed=sampling.seed,
                               label=label)
    else:
        destination.write(codec.wav(codec.join(waves, rate), rate), stem, common.json, n=n, seed=sampling.seed)


RANGES = r"\s*\d*\.?\d+\s*-\s*\d*\.?\d+\s*(,\s*\d*\.?\d+\s*-\s*\d*\.?\d+\s*)*"


def parse_mask(mask: str, length: int, sample_rate: int):
    """The user's mask as bool [length], True = regenerate: time ranges in seconds ("0.5-0.75,1.2-1.3"),
    or a .npy / sound file holding one value per sample (non-zero = regenerate)."""
    import io
    import re
    from pathlib import Path

    import numpy as np
    import torch

    from diffkit.audio.data import decode
    from diffkit.errors import DiffkitError

    if re.fullmatch(RANGES, mask):
        regenerate = torch.zeros(length, dtype=torch.bool)
        for part in mask.split(","):
            start, end = (float(v) for v in part.split("-"))
            first, last = round(start * sample_rate), round(end * sample_rate)
            if not 0 <= first < last <= length:
                raise DiffkitError(f"--mask: range {part.strip()} must lie inside the input's "
                                   f"{length / sample_rate:.3f} s and end after it starts")
            regenerate[first:last] = True
        return regenerate
    if not Path(mask).is_file():
        raise DiffkitError(f"--mask {mask!r}: neither time ranges like 0.5-0.75,1.2-1.3 (seconds) nor a mask file")
    data = Path(mask).read_bytes()
    if mask.lower().endswith(".npy"):
        try:  # allow_pickle=False: a mask file must never run code
            values = np.load(io.BytesIO(data), allow_pickle=False)
            regenerate = torch.from_numpy(values.astype(np.float32)).reshape(-1) != 0
        except (ValueError, OSError, TypeError) as e:
            raise DiffkitError(f"{mask}: not a numeric NumPy array ({str(e).splitlines()[0]})") from None
    else:
        regenerate = decode(data, sample_rate, mask) != 0
    if len(regenerate) != length:
        raise DiffkitError(f"{mask}: mask has {len(regenerate)} samples, the input {length} (at the model's rate)")
    return regenerate


@with_options(Common, Sampling, Signing)
def inpaint(run: Model, input: Input,
            mask: Annotated[str, typer.Option(help="Time ranges to regenerate in seconds (0.5-0.75,1.2-1.3), or a .npy / WAV of one value per sample (non-zero = regenerate).")],
            jump: Annotated[int, typer.Option(help="RePaint jump length in steps.")] = 10,
            resample: Annotated[int, typer.Option(help="RePaint repeats of each jump (1 = none).")] = 5,
            label: Label = None, guidance: Guidance = 1.0, output: Output = "-", trajectory_path: TrajectoryPath = None,
            *, common: Common, sampling: Sampling, signing: Signing):
    """Regenerate the masked time ranges; every other sample keeps the input's value exactly. Inputs longer
    than the model's window are done in overlapping windows."""
    from diffkit.core.editing import Inpaint
    from diffkit.audio import codec
    from diffkit.audio.data import read_audio
    from diffkit.io import Destination, result_stem
    from diffkit.runs import provenance_of
    from diffkit.trajectory import trajectory_target

    destination = Destination.of(output, ".wav", signing.credentials())
    trajectory = trajectory_target(trajectory_path, ".png")
    loaded = pipeline.load(run, common.device)
    spec = loaded.config.data
    rate = spec.sample_rate
    wave = read_audio(input, rate)
    regenerate = parse_mask(mask, len(wave), rate)
    window = min(spec.window, pipeline.padded(len(wave), loaded.model.config.downsampling))
    labels = class_labels(loaded, label, 1, guidance)

    def fill(known, keep):
        part = pipeline.waves(loaded, 1, len(known), sampling, quiet=common.quiet, labels=labels, guidance=guidance,
                              condition=Inpaint(known[None, None], keep.float()[None, None], jump, resample),
                              trajectory=trajectory)
        return part[0, 0]

    result = pipeline.inpaint_windows(wave, regenerate, window, fill)
    stamp = provenance_of(loaded, "inpaint audio", sampling, input, label=label, guidance=guidance, mask=mask)
    if trajectory is not None:
        pipeline.write_trajectory(trajectory_path, trajectory, rate, stamp)
    destination.stamped(stamp).write(codec.wav(result, rate), result_stem(input, "inpainted"), common.json, input=input)


@with_options(Common, Sampling, Signing)
def style(run: Model, input: Input, strength: Strength = None, label: Label = None, guidance: Guidance = 1.0,
          from_class: FromClass = None, method: StyleMethod = None, inversion_iterations: InversionIterations = 0,
          output: Output = "-", trajectory_path: TrajectoryPath = None,
          *, common: Common, sampling: Sampling, signing: Signing):
    """Redraw the input in the model's timbre: partially noised and regenerated (SDEdit), or converted
    from --from-class to --class by the bridge (DDIB), in overlapping windows of the model's length."""
    from diffkit.audio import codec
    from diffkit.audio.data import read_audio
    from diffkit.io import Destination, result_stem
    from diffkit.runs import provenance_of, style_start
    from diffkit.trajectory import trajectory_target
    from diffkit.windows import overlap_process

    destination = Destination.of(output, ".wav", signing.credentials())
    trajectory = trajectory_target(trajectory_path, ".png")
    loaded = pipeline.load(run, common.device)
    strength, source = style_plan(loaded, method, from_class, label, strength, 0.5, guidance)
    rate = loaded.config.data.sample_rate
    wave = read_audio(input, rate)
    if strength > 0:
        window = min(loaded.config.data.window, pipeline.padded(len(wave), loaded.model.config.downsampling))

        def process(windows):
            n = len(windows)
            return pipeline.waves(loaded, n, window, sampling, quiet=common.quiet,
                                  labels=class_labels(loaded, label, n, guidance), guidance=guidance,
                                  start=style_start(windows, strength, source, inversion_iterations),
                                  source_labels=class_labels(loaded, source, n, guidance), trajectory=trajectory)

        wave = overlap_process(wave[None], (window,), process)[0]
    stamp = provenance_of(loaded, "style audio", sampling, input, label=label, guidance=guidance, strength=strength,
                          from_class=from_class)
    if trajectory is not None and trajectory.runs:  # strength 0 takes no steps
        pipeline.write_trajectory(trajectory_path, trajectory, rate, stamp)
    destination.stamped(stamp).write(codec.wav(wave, rate), result_stem(input, "styled"), common.json, input=input)


def describe(run: str, config) -> dict:
    """`diffkit info` for an audio run."""
    from diffkit.runs import summary

    spec = config.data
    return summary(run, config, pipeline.build, (1, spec.window), sample_rate=spec.sample_rate,
                   seconds=round(spec.length / spec.sample_rate, 4), classes=", ".join(spec.classes) or "none")


from diffkit.audio.evaluate import evaluate  # noqa: E402  (typer only at import, like this module)
from diffkit.audio.prepare import prepare  # noqa: E402  (typer only at import, like this module)
from diffkit.audio.restore import restore  # noqa: E402

COMMANDS = {"prepare": prepare, "train": train, "sample": sample, "inpaint": inpaint, "style": style, "restore": restore, "eval": evaluate}
