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
    from diffkit.data.shards import MANIFEST
    from diffkit.data.prepare import new_folder
    from diffkit.io import atomic_write, display_name, write_output
    from diffkit.text.corpus import FORMAT, check_corpus_options, tokenise
    from diffkit.text.data import corpus_kind, corpus_stream
    from diffkit.text.tokenizer import FILE

    check_corpus_options(seq_len, vocab_size, class_cond, pairs, tokenizer)
    source, kind = pairs or data, corpus_kind(bool(pairs), class_cond)
    stream = corpus_stream(kind, source, split, 0, column, label_column)

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
