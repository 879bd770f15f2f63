"""Data of any size: folders indexed lazily, tar shards, Hugging Face datasets and parquet, memory-mapped
token rows, `diffkit prepare`, worker processes that change nothing, and unreadable or vanished data."""

import io
import json
import math
import shutil
import tarfile

import numpy as np
import pytest
import soundfile
import torch
from cli import assert_bad_input, run
from PIL import Image
from safetensors.torch import load_file

from diffkit.errors import DiffkitError

TINY = ["--image-size", 16, "--width", 16, "--mults", "1,2", "--blocks", 1, "--attention", 8, "--batch-size", 8,
        "--timesteps", 50, "-q"]


def _picture(rng, size=(20, 24)) -> np.ndarray:
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def _folder(root, count: int, classes=("cats", "dogs"), seed=0) -> list[np.ndarray]:
    """`count` random images split between class sub-folders, PNG and JPEG; returns them in file order."""
    rng, pictures = np.random.default_rng(seed), {}
    for i in range(count):
        label = classes[i % len(classes)]
        (root / label).mkdir(parents=True, exist_ok=True)
        name = f"{label}/{i:04d}.{'png' if i % 3 else 'jpg'}"
        pictures[name] = _picture(rng)
        Image.fromarray(pictures[name]).save(root / name)
    return [pictures[name] for name in sorted(pictures)]


def _decoded(path) -> torch.Tensor:
    from diffkit.image.data import decode_image

    with open(path, "rb") as f:
        return decode_image(f, 3, (16, 16))


def _shard(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


# ---------------------------------------------------------------- folders


def test_a_folder_is_listed_once_then_opened_from_its_index_until_it_changes(tmp_path, monkeypatch):
    from diffkit.data import folder

    _folder(tmp_path / "data", 200)
    walks = []
    real_walk = folder._walk
    monkeypatch.setattr(folder, "_walk", lambda *a: walks.append(1) or real_walk(*a))
    first = folder.FolderSource(str(tmp_path / "data"), {".png", ".jpg"}, True, "images")
    again = folder.FolderSource(str(tmp_path / "data"), {".png", ".jpg"}, True, "images")
    assert len(first) == len(again) == 200 and walks == [1]  # the second start read the cached index
    assert first.classes == ["cats", "dogs"] and first.labels.tolist() == [0] * 100 + [1] * 100
    Image.fromarray(_picture(np.random.default_rng(1))).save(tmp_path / "data" / "dogs" / "new.png")
    changed = folder.FolderSource(str(tmp_path / "data"), {".png", ".jpg"}, True, "images")
    assert len(changed) == 201 and walks == [1, 1]


def test_folder_images_are_decoded_when_a_batch_names_them(tmp_path):
    from diffkit.image.data import open_data

    _folder(tmp_path, 12)
    data = open_data(str(tmp_path), (16, 16), 3, class_cond=True)
    files = sorted(p for p in tmp_path.rglob("*.*") if p.suffix in (".png", ".jpg"))
    images, labels = data.batch(torch.tensor([5, 0, 11]), torch.Generator())
    for image, index in zip(images, (5, 0, 11)):
        assert torch.equal(image, _decoded(files[index]))
    assert labels.tolist() == [int(files[i].parent.name == "dogs") for i in (5, 0, 11)]


# ---------------------------------------------------------------- shards


def test_webdataset_shards_are_read_at_random_through_their_index(tmp_path):
    from diffkit.image.data import open_data

    rng, pictures = np.random.default_rng(0), []
    for number in range(3):
        members = {}
        for i in range(5):
            key = f"sample{number * 5 + i:04d}"
            pictures.append(_picture(rng))
            members |= {f"{key}.png": _png(pictures[-1]), f"{key}.cls": str((number * 5 + i) % 3).encode(),
                        f"{key}.json": b"{}"}
        _shard(tmp_path / f"train-{number:06d}.tar", members)
    data = open_data(str(tmp_path / "train-{000000..000002}.tar"), (16, 16), 3, class_cond=True)
    assert len(data) == 15 and data.classes == ["0", "1", "2"]
    images, labels = data.batch(torch.tensor([14, 2, 7]), torch.Generator())
    assert labels.tolist() == [14 % 3, 2, 7 % 3]
    from diffkit.image.data import decode_image

    for image, index in zip(images, (14, 2, 7)):
        assert torch.equal(image, decode_image(io.BytesIO(_png(pictures[index])), 3, (16, 16)))


@pytest.mark.parametrize("form", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_the_shard_index_reads_every_tar_format_as_tarfile_does(tmp_path, form):
    from diffkit.data.shards import _read_members

    deep = "/".join(["folder"] * 12)  # past ustar's 100-character name field: a prefix, GNU or pax names
    members = {f"{deep}/{i:03d}.png": bytes([i]) * (100 + 700 * i) for i in range(3)}
    members[f"{deep}/001.cls"] = b"7\n"
    with tarfile.open(tmp_path / "s.tar", "w", format=form) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    index = _read_members(str(tmp_path / "s.tar"))
    with tarfile.open(tmp_path / "s.tar") as tar:
        images = [m for m in tar if m.name.endswith(".png")]
    assert index == {"keys": [m.name.rsplit(".", 1)[0] for m in images], "extensions": ["png"] * 3,
                     "offsets": [m.offset_data for m in images], "sizes": [m.size for m in images],
                     "labels": {f"{deep}/001": "7"}}
    damaged = bytearray((tmp_path / "s.tar").read_bytes())
    damaged[3] ^= 0xFF  # a name byte: the header's checksum no longer adds up
    (tmp_path / "bad.tar").write_bytes(bytes(damaged))
    with pytest.raises(DiffkitError, match="bad.tar: not a readable tar shard \\(bad header checksum at byte 0\\)"):
        _read_members(str(tmp_path / "bad.tar"))


def test_a_header_summed_as_signed_bytes_as_old_tars_do_is_read(tmp_path):
    from diffkit.data.shards import _read_members

    with tarfile.open(tmp_path / "s.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("bild-ä.png")  # UTF-8 bytes past 127: signed and unsigned sums differ
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    raw = bytearray((tmp_path / "s.tar").read_bytes())
    header = raw[:512]
    header[148:156] = b" " * 8
    signed = sum(byte - 256 if byte > 127 else byte for byte in header)
    raw[148:156] = b"%06o\0 " % signed
    (tmp_path / "s.tar").write_bytes(bytes(raw))
    assert _read_members(str(tmp_path / "s.tar"))["keys"] == ["bild-ä"]


def test_a_hard_linked_member_reads_the_data_it_links_to(tmp_path):
    from diffkit.data.shards import TarSource

    (tmp_path / "a.png").write_bytes(_png(_picture(np.random.default_rng(0))))
    (tmp_path / "b.png").hardlink_to(tmp_path / "a.png")
    with tarfile.open(tmp_path / "linked.tar", "w") as tar:  # tar stores b.png as a link to a.png
        tar.add(tmp_path / "a.png", arcname="a.png")
        tar.add(tmp_path / "b.png", arcname="b.png")
        assert tar.getmember("b.png").islnk()
    source = TarSource(str(tmp_path / "linked.tar"), {".png"}, False)
    with source.open(0) as a, source.open(1) as b:
        assert len(source) == 2 and a.read() == b.read() == (tmp_path / "a.png").read_bytes()
    assert [source.name(i) for i in (0, 1)] == [f"{tmp_path / 'linked.tar'}:{n}" for n in ("a.png", "b.png")]


def test_an_unreadable_shard_member_is_replaced_by_the_next_and_reported_once(tmp_path, capfd):
    from diffkit.image.data import open_data

    rng = np.random.default_rng(0)
    pictures = [_picture(rng) for _ in range(4)]
    members = {f"{i:03d}.png": _png(p) for i, p in enumerate(pictures)}
    members["001.png"] = members["001.png"][:60]  # truncated
    _shard(tmp_path / "one.tar", members)
    data = open_data(str(tmp_path / "one.tar"), (16, 16), 3)
    first, _ = data.batch(torch.tensor([1, 2]), torch.Generator())
    again, _ = data.batch(torch.tensor([1]), torch.Generator())
    assert torch.equal(first[0], first[1]) and torch.equal(again[0], first[1])
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "one.tar:001.png: unreadable image, replaced by another" in warnings[0]


def test_prepare_image_writes_shards_that_train_reads(tmp_path):
    _folder(tmp_path / "photos", 30)
    (tmp_path / "photos" / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = run("prepare", "image", "--data", tmp_path / "photos", "--out", tmp_path / "shards", "--image-size", 16,
                 "--class-cond", "--shard-size", 12, "--workers", 2)
    assert result.stderr.decode().count("broken.png: unreadable image, left out") == 1
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["examples"] == 30 and manifest["classes"] == ["cats", "dogs"] and len(manifest["shards"]) == 3
    assert manifest["image_size"] == [18, 18]  # 16 and a margin for random crops
    with tarfile.open(tmp_path / "shards" / manifest["shards"][0]) as tar:
        assert tar.getnames()[:2] == ["000000000.png", "000000000.cls"]
    run("train", "image", "--data", tmp_path / "shards", "--class-cond", "--out", tmp_path / "run", *TINY, "--steps", 3)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["classes"] == ["cats", "dogs"]


def test_prepare_audio_resamples_long_recordings_a_block_at_a_time(tmp_path):
    from diffkit.audio.data import open_data

    t = np.arange(int(70 * 22050)) / 22050  # longer than a block
    soundfile.write(tmp_path / "long.wav", 0.3 * np.sin(2 * math.pi * 220 * t), 22050)
    run("prepare", "audio", "--data", tmp_path, "--out", tmp_path / "shards", "--sample-rate", 8000, "--workers", 0)
    with tarfile.open(tmp_path / "shards" / "train-000000.tar") as tar:
        info = soundfile.info(tar.extractfile("000000000.flac"))
    assert info.samplerate == 8000 and info.channels == 1 and info.frames == 70 * 8000
    direct = open_data(str(tmp_path), 8000, 4000)
    prepared = open_data(str(tmp_path / "shards"), 8000, 4000)
    a, _ = direct.batch(torch.tensor([0]), torch.Generator().manual_seed(3))
    b, _ = prepared.batch(torch.tensor([0]), torch.Generator().manual_seed(3))
    # The same window through the shard: each file is peak-normalised by its own samples, and resampling
    # moves the peak by a few parts in 10,000.
    assert (a - b).abs().max() < 1e-3


# ---------------------------------------------------------------- Hugging Face datasets and parquet


def test_hugging_face_datasets_and_parquet_are_memory_mapped(tmp_path):
    datasets = pytest.importorskip("datasets")
    from diffkit.image.data import decode_image, open_data

    rng = np.random.default_rng(0)
    pictures = [_picture(rng) for _ in range(9)]
    features = datasets.Features({"picture": datasets.Image(), "kind": datasets.ClassLabel(names=["x", "y", "z"])})
    dataset = datasets.Dataset.from_dict({"picture": [Image.fromarray(p) for p in pictures],
                                          "kind": [i % 3 for i in range(9)]}, features=features)
    dataset.save_to_disk(str(tmp_path / "saved"))
    dataset.to_parquet(str(tmp_path / "table.parquet"))
    for spec in (f"hf:{tmp_path / 'saved'}", f"hf:{tmp_path / 'table.parquet'}"):
        data = open_data(spec, (16, 16), 3, class_cond=True, column="picture", label_column="kind")
        assert len(data) == 9 and data.classes == ["x", "y", "z"]
        images, labels = data.batch(torch.tensor([8, 1]), torch.Generator())
        assert labels.tolist() == [2, 1]
        assert torch.equal(images[0], decode_image(io.BytesIO(_png(pictures[8])), 3, (16, 16)))
    with pytest.raises(DiffkitError, match="none of the usual columns.*it has picture, kind"):
        open_data(f"hf:{tmp_path / 'saved'}", (16, 16), 3)


def test_parquet_audio_in_a_binary_column(tmp_path):
    import pyarrow
    import pyarrow.parquet

    from diffkit.audio.data import open_data

    clips = []
    for f in (220, 330, 440):
        out = io.BytesIO()
        soundfile.write(out, 0.5 * np.sin(2 * math.pi * f * np.arange(8000) / 8000), 8000, format="FLAC")
        clips.append(out.getvalue())
    pyarrow.parquet.write_table(pyarrow.table({"flac": clips, "speaker": ["a", "b", "a"]}), tmp_path / "clips.parquet")
    data = open_data(f"hf:{tmp_path / 'clips.parquet'}", 8000, 4000, class_cond=True, column="flac",
                     label_column="speaker")
    waves, labels = data.batch(torch.tensor([0, 1, 2]), torch.Generator())
    assert waves.shape == (3, 1, 4000) and labels.tolist() == [0, 1, 0] and data.classes == ["a", "b"]


# ---------------------------------------------------------------- text


def test_prepare_text_rows_are_the_encoded_corpus_and_train_reads_them_in_place(tmp_path):
    from diffkit.text.pipeline import encode_lines
    from diffkit.text.corpus import TokenRows
    from diffkit.text.grammar import lines
    from diffkit.text.tokenizer import Tokenizer

    corpus = lines(300, seed=5)
    (tmp_path / "corpus.txt").write_text("\n".join(corpus) + "\n")
    run("prepare", "text", "--data", tmp_path / "corpus.txt", "--out", tmp_path / "tokens", "--seq-len", 24)
    manifest = json.loads((tmp_path / "tokens" / "manifest.json").read_text())
    assert manifest["examples"] == 300 and manifest["dtype"] == "uint16"
    tokenizer = Tokenizer.load(tmp_path / "tokens")
    rows = TokenRows(tmp_path / "tokens", 24, "uint16", "lines")
    assert torch.equal(rows.rows(torch.arange(300)), encode_lines(tokenizer, corpus, 24, "corpus", strict=True))
    args = ["--seq-len", 24, "--embed-dim", 8, "--width", 32, "--depth", 1, "--heads", 2, "--batch-size", 16, "-q"]
    run("train", "text", "--data", tmp_path / "tokens", "--out", tmp_path / "run", *args, "--steps", 2)
    run("train", "text", "--data", tmp_path / "tokens", "--out", tmp_path / "run", *args, "--steps", 4, "--resume")
    assert not (tmp_path / "run" / "tokens.bin").exists()  # read where prepare wrote them
    run("train", "text", "--data", tmp_path / "corpus.txt", "--out", tmp_path / "direct", *args, "--steps", 2)
    assert (tmp_path / "direct" / "tokens.bin").read_bytes() == (tmp_path / "tokens" / "tokens.bin").read_bytes()


def test_text_from_parquet_rows_with_classes_and_eval_judges_novelty_on_the_rows(tmp_path):
    import pyarrow
    import pyarrow.parquet

    texts = [f"line number {i} of {'poems' if i % 2 else 'news'}" for i in range(60)]
    table = pyarrow.table({"body": texts, "genre": ["poem" if i % 2 else "news" for i in range(60)]})
    pyarrow.parquet.write_table(table, tmp_path / "corpus.parquet")
    args = ["--seq-len", 16, "--embed-dim", 8, "--width", 32, "--depth", 1, "--heads", 2, "--batch-size", 16, "-q"]
    run("train", "text", "--data", f"hf:{tmp_path / 'corpus.parquet'}", "--column", "body", "--class-cond",
        "--label-column", "genre", "--out", tmp_path / "run", *args, "--steps", 2)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["classes"] == ["news", "poem"] and config["data"]["examples"] == 60
    (tmp_path / "held.txt").write_text("news of the day\nanother line\n")
    out = run("eval", "text", "-m", tmp_path / "run", "--data", tmp_path / "held.txt", "-n", 2, "--samples", 2,
              "--steps", 2, "--strata", 2, "--json")
    metrics = {r["metric"]: r for r in map(json.loads, out.stdout.decode().splitlines())}
    assert "novel_share" in metrics  # the training lines, decoded from the run's token rows


def test_the_tokenizer_sample_is_bounded_and_uniform(monkeypatch):
    from diffkit.text import corpus

    monkeypatch.setattr(corpus, "SAMPLE", 100)
    found = corpus.survey((f"line {i}" for i in range(10_000)), "lines", seed=0)
    numbers = [int(line.split()[1]) for line in found.sample]
    assert found.count == 10_000 and len(numbers) == 100 == len(set(numbers))
    assert 3500 < np.mean(numbers) < 6500  # a uniform sample's mean, 4999.5 ± 3 standard errors
    small = corpus.survey(iter(["a", "b", "c"]), "lines", seed=0)
    assert small.sample == ["a", "b", "c"]  # a corpus within the bound is kept whole and in order


# ---------------------------------------------------------------- workers, unreadable and vanished data


def test_workers_and_unreadable_files_change_nothing_but_one_warning_each(tmp_path):
    _folder(tmp_path / "photos", 24)
    for name in ("cats/0002.png", "dogs/0009.jpg"):
        (tmp_path / "photos" / name).write_bytes(b"broken")
    args = ["--data", tmp_path / "photos", "--class-cond", *TINY, "--steps", 8]
    run("train", "image", "--out", tmp_path / "none", *args, "--workers", 0)
    two = run("train", "image", "--out", tmp_path / "two", *args, "--workers", 2)
    warnings = [line for line in two.stderr.decode().splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and all(any(name in w for w in warnings) for name in ("cats/0002.png", "dogs/0009.jpg"))
    a, b = load_file(tmp_path / "none" / "state" / "trainer.safetensors"), load_file(tmp_path / "two" / "state" / "trainer.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_replaced_example_is_the_next_readable_one_and_vanished_data_stops_the_run(tmp_path):
    from diffkit.image.data import open_data

    _folder(tmp_path / "photos", 6)
    data = open_data(str(tmp_path / "photos"), (16, 16), 3)
    expected, _ = data.batch(torch.tensor([2]), torch.Generator())
    (tmp_path / "photos" / "cats" / "0000.jpg").write_bytes(b"broken")  # index 0, found unreadable later
    replaced, _ = data.batch(torch.tensor([0]), torch.Generator())
    following, _ = data.batch(torch.tensor([1]), torch.Generator())
    assert torch.equal(replaced, following)
    shutil.rmtree(tmp_path / "photos")
    with pytest.raises(DiffkitError, match="photos: the data has gone"):
        data.batch(torch.tensor([3]), torch.Generator())
    assert expected.shape == (1, 3, 16, 16)


def test_data_that_fail_mid_run_stop_it_with_a_checkpoint_of_every_step_trained(tmp_path):
    from diffkit.core import make_schedule
    from diffkit.core.checkpoint import read_state
    from diffkit.core.trainer import TrainSettings, Trainer
    from diffkit.points.model import PointsConfig, PointsDenoiser

    settings = TrainSettings(steps=20, checkpoint_every=100, warmup=1)
    trainer = Trainer(PointsDenoiser(PointsConfig(dim=2, hidden=16, out=2)), make_schedule("cosine", 100), settings,
                      prediction="eps", variance="fixed_small", run=tmp_path)
    data = torch.randn(16, 2)

    def batch_at(step, micro):
        if step == 7:
            raise DiffkitError("photos/: the data has gone")
        return data, {}

    with pytest.raises(DiffkitError, match="data has gone; checkpoint saved at step 7$"):
        trainer.fit(batch_at)
    assert read_state(tmp_path)[1]["step"] == 7


# ---------------------------------------------------------------- bad input


def _hf(tmp):
    datasets = pytest.importorskip("datasets")
    (tmp / "hf").mkdir(exist_ok=True)
    datasets.Dataset.from_dict({"image": [Image.fromarray(_picture(np.random.default_rng(0)))]}).save_to_disk(str(tmp / "hf" / "ds"))
    return tmp / "hf" / "ds"


def _photos(tmp):
    _folder(tmp / "photos", 4)
    return tmp / "photos"


def _prepared_text(tmp):
    run("prepare", "text", "--out", tmp / "tokens", "--seq-len", 24)
    return tmp / "tokens"


def _not_a_tar(tmp):
    (tmp / "junk.tar").write_bytes(b"this is not a tar archive at all" * 40)
    return tmp / "junk.tar"


def _unlabelled_shard(tmp):
    _shard(tmp / "plain.tar", {"a.png": _png(_picture(np.random.default_rng(0)))})
    return tmp / "plain.tar"


def _full(tmp):
    (tmp / "full").mkdir()
    (tmp / "full" / "keep.txt").write_text("mine")
    return tmp / "full"


TRAIN_IMAGE = ["train", "image", *TINY, "--steps", 2]
BAD = {
    "hf dataset missing": lambda t: [*TRAIN_IMAGE, "--data", f"hf:{t / 'nowhere'}", "--out", t / "run"],
    "hf column missing": lambda t: [*TRAIN_IMAGE, "--data", f"hf:{_hf(t)}", "--column", "photo", "--out", t / "run"],
    "hf label column without classes": lambda t: [*TRAIN_IMAGE, "--data", f"hf:{_hf(t)}", "--label-column", "label", "--out", t / "run"],
    "column on a folder": lambda t: [*TRAIN_IMAGE, "--data", _photos(t), "--column", "image", "--out", t / "run"],
    "shard missing": lambda t: [*TRAIN_IMAGE, "--data", t / "train-{000000..000002}.tar", "--out", t / "run"],
    "not a tar": lambda t: [*TRAIN_IMAGE, "--data", _not_a_tar(t), "--out", t / "run"],
    "shard without classes": lambda t: [*TRAIN_IMAGE, "--data", _unlabelled_shard(t), "--class-cond", "--out", t / "run"],
    "negative workers": lambda t: [*TRAIN_IMAGE, "--data", "builtin:shapes", "--workers", -1, "--out", t / "run"],
    "prepare into a full folder": lambda t: ["prepare", "image", "--data", _photos(t), "--out", _full(t)],
    "prepare audio at 500 Hz": lambda t: ["prepare", "audio", "--data", t, "--sample-rate", 500, "--out", t / "shards"],
    "prepare image negative workers": lambda t: ["prepare", "image", "--data", _photos(t), "--workers", -2, "--out", t / "shards"],
    "prepare image no images": lambda t: ["prepare", "image", "--data", _full(t), "--out", t / "shards"],
    "prepared text at another length": lambda t: ["train", "text", "--data", _prepared_text(t), "--seq-len", 32, "--out", t / "run"],
    "prepared text without its classes": lambda t: ["train", "text", "--data", _prepared_text(t), "--seq-len", 24, "--class-cond", "--out", t / "run"],
}


@pytest.mark.parametrize("case", BAD)
def test_bad_data_gives_one_error_line_and_leaves_nothing(case, tmp_path):
    args = BAD[case](tmp_path)  # fixtures first: what they make is not the command's to remove
    assert_bad_input(args, b"", tmp_path)
