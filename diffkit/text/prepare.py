"""`diffkit prepare text`: a corpus of any size tokenised once into memory-mapped rows (with the
tokenizer, trained on a sample of it), which any number of `train text --data DIR` runs then read
without tokenising again."""

from diffkit.options import Column, Common, LabelColumn, Preparing, with_options
from diffkit.text.options import ClassCond, Data, Pairs, SeqLen, Split, TokenizerType, VocabSize


@with_options(Preparing, Common)
def prepare(data: Data = "builtin:weather", pairs: Pairs = None, split: Split = "line", seq_len: SeqLen = 64,
            vocab_size: VocabSize = None, tokenizer: TokenizerType = "bpe", class_cond: ClassCond = False,
            column: Column = None, label_column: LabelColumn = None, *, preparing: Preparing, common: Common):
    """Tokenise a corpus into tokens.bin (and labels.bin or sources.bin), tokenizer.model and a
    manifest.json that `train text --data` reads. --shard-size and --workers do not apply to text."""
    import json

    from diffkit.console import log
    from diffkit.data import MANIFEST
    from diffkit.data.prepare import new_folder
    from diffkit.errors import DiffkitError, choose
    from diffkit.io import atomic_write, display_name, write_output
    from diffkit.text.corpus import FORMAT, tokenise
    from diffkit.text.data import iter_classes, iter_lines, iter_pairs
    from diffkit.text.tokenizer import FILE, MODEL_TYPES

    if seq_len < 4 or seq_len > 4096:
        raise DiffkitError(f"--seq-len must be in 4..4096, got {seq_len}")
    if vocab_size is not None and vocab_size < 16:
        raise DiffkitError(f"--vocab-size must be at least 16, got {vocab_size}")
    if class_cond and pairs:
        raise DiffkitError("--class-cond applies to --data, not to --pairs")
    choose("tokenizer", tokenizer, MODEL_TYPES)
    source = pairs or data
    kind = "pairs" if pairs else "classes" if class_cond else "lines"

    def stream():
        if kind == "pairs":
            return iter_pairs(source)
        return iter_classes(source, split, 0, column, label_column) if kind == "classes" else iter_lines(source, split, 0, column)

    with new_folder(preparing.out) as out:
        corpus = tokenise(out, stream, kind, seq_len, vocab_size, tokenizer, 0, display_name(source))
        write_output(str(out / FILE), corpus.tokenizer_model)
        manifest = {"format": FORMAT, "modality": "text", "kind": kind, "source": source, "split": split,
                    "seq_len": seq_len, "examples": corpus.count, "classes": corpus.classes,
                    "dtype": corpus.rows.tokens.dtype.name}
        with atomic_write(out / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=2)
    log(f"prepared {corpus.count} examples ({len(corpus.rows) * seq_len:,} token slots) into {preparing.out}",
        common.quiet)
