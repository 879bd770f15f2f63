"""Where a text model of builtin:weather falls short, measured against the exact denoiser of its own
embedding space.

builtin:weather is a finite set of sentences with known probabilities (74,880: four templates, every
day and city, each sky with the temperatures it allows), so in a run's embedding space the data are
point masses and the exact denoiser is a softmax over all of them:
E[x_0 | x_t] = sum_s w_s EMB(s), w_s ∝ p(s) exp(-‖x_t - √ᾱ EMB(s)‖² / 2(1 - ᾱ)). (Not diffkit.core.mixture's
GaussianMixture: it would hold a D × D covariance for each of the 74,880 sentences, D = 1,024.)

1. The sampler alone: the grammar share of samples drawn with the exact denoiser in place of the network
   (the text defaults: ddpm, 20 steps, logsnr grid; clamped and not), what the sampler reaches with a
   perfect network.
2. The network: on noised held-out sentences (every position at level t, as in training), KL(exact ||
   network) of the token distribution at the temperature and at the sky, and the probability each puts
   on the temperatures the sentence's sky allows. Agreement between the two is what the grammar judges.

    python bench/text_oracle.py RUN [RUN ...] [--threads 2] [--sentences 256] [--seeds 0,1]

Writes bench/results/text_oracle.json.
"""

import argparse
import itertools
import json
import math
import os
from pathlib import Path

import torch

from diffkit.core import sample
from diffkit.core.diffusion import q_sample
from diffkit.text import grammar
from diffkit.text.pipeline import load, encode_lines
from diffkit.text.model import clamp_hook
from diffkit.text.options import TextSampling

LEVELS = (300, 500, 600, 700, 800, 850, 900)  # of T = 1000: σ/α from 1.1 to 4.3 on the sqrt schedule


def every_sentence() -> tuple[list[str], torch.Tensor]:
    """All of builtin:weather's report sentences and their log-probabilities as grammar.sentence draws them."""
    lines, log_p = [], []
    for template, day, city, (sky, (low, high)) in itertools.product(
            grammar.TEMPLATES, grammar.DAYS, grammar.CITIES, grammar.SKIES.items()):
        for temp in range(low, high + 1):
            lines.append(template.format(day=day, city=city, sky=sky, temp=temp))
            log_p.append(-math.log(len(grammar.TEMPLATES) * len(grammar.DAYS) * len(grammar.CITIES)
                                   * len(grammar.SKIES) * (high - low + 1)))
    return lines, torch.tensor(log_p)


class ExactDenoiser(torch.nn.Module):
    """x̂_0 of point masses `points` [N, D, L] with log-weights `log_p` under `schedule`."""

    def __init__(self, points: torch.Tensor, log_p: torch.Tensor, schedule):
        super().__init__()
        self.points, self.flat, self.log_p, self.schedule = points, points.flatten(1), log_p, schedule
        self.sq_norms = self.flat.square().sum(1)

    def posterior(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """p(sentence | x_t) [B, N]."""
        ab = float(self.schedule.alphas_cumprod[t])
        return (self.log_p + (math.sqrt(ab) * x.flatten(1) @ self.flat.T - 0.5 * ab * self.sq_norms) / (1 - ab)).softmax(-1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **unused) -> torch.Tensor:
        return (self.posterior(x, int(t[0])) @ self.flat).reshape(x.shape)


def measure(path: str, sentences: int, seeds: list[int]) -> dict:
    run, tok = load(path)
    model, length = run.model, run.config.data.seq_len
    lines, log_p = every_sentence()
    tokens = encode_lines(tok, lines, length, "builtin:weather", strict=True)
    with torch.no_grad():
        exact = ExactDenoiser(model.embed(tokens), log_p, run.schedule)

    shares = {}
    for clamp in (True, False):
        for seed in seeds:
            x = sample(exact, (256, model.config.embed_dim, length), run.schedule, TextSampling(seed=seed),
                       prediction="x0", hook=clamp_hook(model) if clamp else None)
            texts = [tok.decode(row) for row in model.logits(x).argmax(-1)]
            share = sum(grammar.parse(text) is not None for text in texts) / len(texts)
            shares.setdefault("clamped" if clamp else "unclamped", []).append(share)

    generator = torch.Generator().manual_seed(0)
    chosen = torch.randperm(len(lines), generator=generator)[:sentences]
    rows = torch.arange(sentences)

    def position_of(words: list[str]) -> torch.Tensor:
        ids = {tok.encode(word)[-1] for word in words}
        return torch.tensor([next(i for i, v in enumerate(tokens[n].tolist()) if v in ids) for n in chosen])

    coldest, warmest = min(low for low, _ in grammar.SKIES.values()), max(high for _, high in grammar.SKIES.values())
    temperatures = [str(v) for v in range(coldest, warmest + 1)]
    positions = {"temperature": position_of(temperatures), "sky": position_of(list(grammar.SKIES))}
    allowed = torch.zeros(sentences, model.config.vocab)  # the temperatures each sentence's sky allows
    for row, n in enumerate(chosen.tolist()):
        low, high = grammar.SKIES[grammar.parse(lines[n])["sky"]]
        allowed[row, [tok.encode(str(v))[-1] for v in range(low, high + 1)]] = 1
    self_cond = run.config.diffusion.self_cond
    x0 = exact.points[chosen]
    levels = []
    for t in LEVELS:
        ab = float(run.schedule.alphas_cumprod[t])
        steps = torch.full((sentences,), t)
        x_t = q_sample(run.schedule, x0, steps, torch.randn(x0.shape, generator=generator))
        weights = exact.posterior(x_t, t)
        with torch.no_grad():  # as the bound feeds a self-conditioned network: its estimate at the same x_t
            estimate = model.predict(x_t, steps)[0][:, :model.config.embed_dim] if self_cond else None
            log_q = model.predict(x_t, steps, self_cond=estimate)[1].log_softmax(-1)
        level = {"t": t, "sigma_over_alpha": math.sqrt((1 - ab) / ab)}
        for name, position in positions.items():
            # The exact token distribution at each row's position: every sentence's posterior weight
            # added onto the token it has there.
            columns = tokens[:, position].T  # [sentences, N]
            p = torch.zeros(sentences, model.config.vocab).scatter_add_(1, columns, weights)
            q = log_q[rows, position]
            level[f"kl_{name}"] = (p * (p.clamp_min(1e-30).log() - q)).sum(-1).mean().item()
            if name == "temperature":
                level["allowed_network"] = (q.exp() * allowed).sum(-1).mean().item()
                level["allowed_exact"] = (p * allowed).sum(-1).mean().item()
        levels.append(level)
    return {"run": path, "exact_denoiser_grammar_share": shares, "levels": levels}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories trained on builtin:weather")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", default="bench/results/text_oracle.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for path in args.runs:
        result = measure(path, args.sentences, [int(s) for s in args.seeds.split(",")])
        shares = "; ".join(f"{how} {', '.join(f'{s:.1%}' for s in values)}"
                           for how, values in result["exact_denoiser_grammar_share"].items())
        print(f"{path}: the exact denoiser's samples grammatical, by noise seed: {shares}")
        print(f"{'t':>5} {'σ/α':>5} {'KL temp':>8} {'KL sky':>7} {'allowed: network':>17} {'exact':>6}")
        for level in result["levels"]:
            print(f"{level['t']:>5} {level['sigma_over_alpha']:>5.2f} {level['kl_temperature']:>8.3f} {level['kl_sky']:>7.3f} "
                  f"{level['allowed_network']:>17.3f} {level['allowed_exact']:>6.3f}")
        results.append(result)
    os.makedirs(Path(args.out).parent, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
