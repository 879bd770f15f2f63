"""The run's sentencepiece tokenizer: trained on the corpus at `train` time, stored as tokenizer.model in
the run directory (a protobuf, never unpickled) and reused by every later command.

Ids 0-3 are fixed: padding, unknown, end of sequence, and the separator between the source and the
target of a pair. Normalisation is the identity and whitespace is kept as written, so the pieces of a
line concatenate back to the line itself and edited lines can be spliced into the user's own text.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from diffkit.errors import DiffkitError

FILE = "tokenizer.model"
PAD, UNK, EOS, SEP = 0, 1, 2, 3
# BPE first: on a small corpus sentencepiece's unigram trainer prunes its vocabulary far below the size
# asked for (87 pieces of 357 on builtin:weather, splitting words into letters), BPE makes whole words.
MODEL_TYPES = ("bpe", "unigram")
MAX_DEFAULT_VOCAB = 8000


def default_vocab_size(lines: list[str]) -> int:
    """Sized to the corpus: enough BPE merges to make every distinct word one piece (a word of n
    characters needs at most n - 1), capped at MAX_DEFAULT_VOCAB, so a small corpus gets whole words and
    a large one a sub-word vocabulary. An upper bound: training stops when nothing is left to merge."""
    words = {word for line in lines for word in line.split()}
    chars = {char for line in lines for char in line}
    return max(16, min(MAX_DEFAULT_VOCAB, len(chars) + sum(len(word) for word in words) + 4))


def train_tokenizer(lines: list[str], vocab_size: int, model_type: str = "bpe") -> bytes:
    """A sentencepiece model trained on `lines`; vocab_size is an upper bound (a small corpus gets fewer)."""
    import sentencepiece as spm

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, hard_vocab_limit=False,
            model_type=model_type, pad_id=PAD, unk_id=UNK, eos_id=EOS, bos_id=-1, user_defined_symbols=["<sep>"],
            normalization_rule_name="identity", remove_extra_whitespaces=False, character_coverage=1.0,
            input_sentence_size=200_000, shuffle_input_sentence=True, minloglevel=2)
    except RuntimeError as e:
        raise DiffkitError(f"tokenizer training failed: {str(e).splitlines()[0]}") from None
    return model.getvalue()


class Tokenizer:
    def __init__(self, model: bytes):
        import sentencepiece as spm

        self.model = model
        self.sp = spm.SentencePieceProcessor(model_proto=model)

    @classmethod
    def load(cls, run: str | Path) -> "Tokenizer":
        path = Path(run) / FILE
        if not path.is_file():
            raise DiffkitError(f"{run}: no {FILE} (the run's tokenizer)")
        try:
            return cls(path.read_bytes())
        except RuntimeError:
            raise DiffkitError(f"{path}: not a sentencepiece model") from None

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def pieces(self, text: str) -> list[str]:
        return self.sp.encode(text, out_type=str)

    def decode(self, ids) -> str:
        """Text of ids up to the first end of sequence, padding and separators dropped."""
        ids = [int(i) for i in ids]
        if EOS in ids:
            ids = ids[:ids.index(EOS)]
        return self.sp.decode([i for i in ids if i not in (PAD, SEP)])

    def pack(self, ids: list[int], length: int) -> torch.Tensor:
        """ids + end of sequence, padded to `length`."""
        ids = ids + [EOS]
        return torch.tensor(ids + [PAD] * (length - len(ids)), dtype=torch.long)
