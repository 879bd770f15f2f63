"""The text commands' shared options: the run, input and output, clamping, and the text defaults of the
training and sampling groups (their own module, so that `eval text` can use them without importing the
other commands)."""

from typing import Annotated, Optional

import typer

from diffkit.options import Sampling, Training, with_defaults
from diffkit.text import pipeline

Model = Annotated[str, typer.Option("--model", "-m", help="Run directory written by `diffkit train text`.")]
Input = Annotated[str, typer.Option("--input", "-i", help="UTF-8 text file, one example per line, or - for stdin.")]
Output = Annotated[str, typer.Option("--output", "-o", help="A .txt file (one line per result), a folder (a new .txt file there), or - for stdout.")]
Clamp = Annotated[bool, typer.Option("--clamp/--no-clamp", help="Snap the predicted x0 to the nearest token embeddings at every step.")]
Mbr = Annotated[int, typer.Option(help="A --pairs model: draw K samples for each source and keep their consensus, the one with the highest mean chrF against the others (minimum Bayes risk).")]

TextTraining = with_defaults(Training, **pipeline.TRAINING)
TextSampling = with_defaults(Sampling, **pipeline.SAMPLING)
# style: ddpm for SDEdit, dpm++2m for the bridge (which needs a deterministic sampler), unless told.
StyleSampling = with_defaults(Sampling, sampler=None, spacing="logsnr")

# The corpus options of `train text` and `prepare text`.
Data = Annotated[str, typer.Option(help="Text file, folder of text files, - (stdin), builtin:weather, or a folder `diffkit prepare text` wrote.")]
Pairs = Annotated[Optional[str], typer.Option(help="Sequence to sequence on source<TAB>target lines (a TSV file, or builtin:weather: records to sentences) instead of --data.")]
Split = Annotated[str, typer.Option(help="One example per line or per paragraph.")]
SeqLen = Annotated[int, typer.Option(help="Tokens per example, end of sequence included.")]
VocabSize = Annotated[Optional[int], typer.Option(help="Sentencepiece vocabulary (an upper bound); default: sized to the corpus.")]
TokenizerType = Annotated[str, typer.Option("--tokenizer", help="Sentencepiece model type: bpe or unigram.")]
ClassCond = Annotated[bool, typer.Option("--class-cond", help="Condition on classes: builtin:weather's two registers, a folder's sub-folders (or files), or label<TAB>text lines.")]
