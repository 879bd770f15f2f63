"""What a generated file tells about how it was made.

Provenance: every file a generating command writes says so (PNG iTXt + XMP, WAV LIST/INFO, a sidecar and
`--json` fields for text and CSV), other readers still read the files unchanged, `diffkit info FILE` reads
it back, and a file saved again without it reads as carrying none. Trajectories: `--trajectory` writes
x̂_0 at every step, its last step being the result itself."""

import hashlib
import io
import json

import numpy as np
import pytest
import soundfile
from cli import run_here
from PIL import Image

from diffkit import provenance
from test_audio import RATE, TINY as AUDIO
from test_image import TINY as IMAGE
from test_text import TINY as TEXT

FAST = ["--steps", 3, "-q"]
RECORD = provenance.record("sample image", "ab" * 32, "ddpm", 3, 7, input_sha256="cd" * 32, label="star")


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _wav_bytes() -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.random.default_rng(0).integers(-3000, 3000, 101).astype(np.int16), RATE,
                    format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_png_carries_the_record_pixels_unchanged_and_a_resave_drops_it(tmp_path):
    plain = _png_bytes()
    stamped = provenance.embed(plain, RECORD)
    assert provenance.extract(stamped) == RECORD and provenance.extract(plain) is None
    with Image.open(io.BytesIO(stamped)) as image, Image.open(io.BytesIO(plain)) as original:
        assert np.array_equal(np.asarray(image), np.asarray(original))
        assert json.loads(image.info[provenance.KEYWORD]) == RECORD          # Pillow reads the chunk
        assert b"trainedAlgorithmicMedia" in image.info["xmp"]                # and the XMP packet
        image.save(tmp_path / "resaved.png")
    assert provenance.read(tmp_path / "resaved.png") is None


def test_wav_carries_the_record_and_reads_as_the_same_samples():
    plain = _wav_bytes()
    stamped = provenance.embed(plain, RECORD)
    assert provenance.extract(stamped) == RECORD and provenance.extract(plain) is None
    with soundfile.SoundFile(io.BytesIO(stamped)) as f, soundfile.SoundFile(io.BytesIO(plain)) as g:
        assert np.array_equal(f.read(dtype="int16"), g.read(dtype="int16"))
        assert f.software == RECORD["generator"] and json.loads(f.comment) == RECORD  # libsndfile reads INFO


def test_other_data_is_left_alone_and_broken_records_read_as_none():
    assert provenance.embed(b"a,b\n1,2\n", RECORD) == b"a,b\n1,2\n"
    broken = provenance.embed(_png_bytes(), RECORD).replace(b'"generator"', b'"generator" x')
    assert provenance.extract(broken) is None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("provenance")
    for name, args in (("image", ["--class-cond", *IMAGE]), ("audio", AUDIO), ("text", TEXT), ("points", [])):
        code, stderr = run_here("train", name, "--out", folder / name, "--steps", 4, "-q", *args)
        assert code == 0, stderr
    return folder


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _inputs(folder):
    Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8)).save(folder / "in.png")
    soundfile.write(folder / "in.wav", 0.1 * np.sin(np.arange(RATE // 4) / 5), RATE, subtype="PCM_16")
    (folder / "in.txt").write_text("monday will be sunny in paris .\n")
    (folder / "in.csv").write_text("0.5,0.5\n-1,0\n")


def test_every_generating_command_marks_its_outputs(runs, tmp_path):
    _inputs(tmp_path)
    cases = [  # (modality, command, its options, output)
        ("image", "sample", ["-n", 2, "--class", "star"], "grid.png"),
        ("image", "sample", ["-n", 2], "folder"),
        ("image", "inpaint", ["-i", "in.png", "--mask", "box:2,2,4,4", "--resample", 1], "inpainted.png"),
        ("image", "style", ["-i", "in.png"], "styled.png"),
        ("image", "restore", ["-i", "in.png", "--task", "denoise:0.1"], "restored.png"),
        ("audio", "sample", ["-n", 1], "clip.wav"),
        ("audio", "inpaint", ["-i", "in.wav", "--mask", "0.05-0.1", "--resample", 1], "inpainted.wav"),
        ("audio", "style", ["-i", "in.wav"], "styled.wav"),
        ("audio", "restore", ["-i", "in.wav", "--task", "denoise:0.05"], "restored.wav"),
        ("text", "sample", ["-n", 2], "lines.txt"),
        ("text", "inpaint", ["-i", "in.txt", "--mask", "1"], "filled.txt"),
        ("text", "style", ["-i", "in.txt"], "styled.txt"),
        ("points", "sample", ["-n", 3], "points.csv"),
        ("points", "style", ["-i", "in.csv"], "styled.csv"),
        ("points", "inpaint", ["-i", "in.csv", "--keep", "0"], "inpainted.csv"),
    ]
    weights = {name: hashlib.sha256((runs / name / "model.safetensors").read_bytes()).hexdigest()
               for name in ("image", "audio", "text", "points")}
    for modality, command, options, output in cases:
        options = [tmp_path / o if str(o).startswith("in.") else o for o in options]
        code, stderr = run_here(command, modality, "-m", runs / modality, *options, "-o", tmp_path / output,
                                "--seed", 5, *FAST)
        assert code == 0, stderr
        written = sorted((tmp_path / output).iterdir()) if output == "folder" else [tmp_path / output]
        for path in written:
            found = provenance.read(path)
            assert found is not None, path
            assert found["command"] == f"{command} {modality}" and found["model_sha256"] == weights[modality]
            assert found["generator"].startswith("diffkit ") and found["digital_source_type"] == provenance.SOURCE_TYPE
            assert found["seed"] == 5 and found["steps"] == 3 and found["sampler"]
            if "-i" in options:
                assert found["input_sha256"] == _sha256(options[options.index("-i") + 1])
            else:
                assert "input_sha256" not in found
            if path.suffix in (".txt", ".csv"):
                assert provenance.sidecar(path).is_file()  # no place inside a text file: beside it
    assert provenance.read(tmp_path / "grid.png")["label"] == "star"


def test_json_lines_of_text_carry_it_and_info_reads_files_back(runs, tmp_path, capsys):
    from typer.testing import CliRunner

    from diffkit import cli

    result = CliRunner().invoke(cli.app, ["sample", "text", "-m", str(runs / "text"), "-n", 2, "--json", *map(str, FAST)])
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 2 and all(line["provenance"]["command"] == "sample text" for line in lines)

    code, _ = run_here("sample", "image", "-m", runs / "image", "-n", 1, "-o", tmp_path / "one.png", *FAST)
    assert code == 0
    shown = CliRunner().invoke(cli.app, ["info", str(tmp_path / "one.png")])
    assert shown.exit_code == 0 and "trainedAlgorithmicMedia" in shown.stdout and "sample image" in shown.stdout
    as_json = CliRunner().invoke(cli.app, ["info", str(tmp_path / "one.png"), "--json"])
    assert json.loads(as_json.stdout) == provenance.read(tmp_path / "one.png")

    with Image.open(tmp_path / "one.png") as image:
        image.save(tmp_path / "resaved.png")
    none = CliRunner().invoke(cli.app, ["info", str(tmp_path / "resaved.png")])
    assert none.exit_code == 0 and "no provenance" in none.stdout
    missing = CliRunner().invoke(cli.app, ["info", str(tmp_path / "nowhere.png")])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: ") and "no such file" in missing.stderr


def test_trajectories_show_every_step_and_end_at_the_result(runs, tmp_path):
    code, stderr = run_here("sample", "image", "-m", runs / "image", "-n", 3, "-o", tmp_path / "folder",
                            "--trajectory", tmp_path / "image.png", *FAST)
    assert code == 0, stderr
    strip = np.asarray(Image.open(tmp_path / "image.png"))
    assert strip.shape[:2] == (2 + 3 * 18, 2 + 3 * 18)  # a row per sample, a column per step, 16 px + 2 apart
    for row, path in enumerate(sorted((tmp_path / "folder").glob("*.png"))):
        last = strip[2 + row * 18:2 + row * 18 + 16, 2 + 2 * 18:2 + 2 * 18 + 16]
        assert np.array_equal(last, np.asarray(Image.open(path)))
    assert provenance.read(tmp_path / "image.png")["command"] == "sample image"

    code, stderr = run_here("sample", "audio", "-m", runs / "audio", "-n", 2, "-o", tmp_path / "clips",
                            "--trajectory", tmp_path / "audio.png", *FAST)
    assert code == 0, stderr
    assert Image.open(tmp_path / "audio.png").height > 2 * 32  # two rows of spectrograms
    for i, path in enumerate(sorted((tmp_path / "clips").glob("*.wav"))):
        steps, rate = soundfile.read(tmp_path / f"audio-{i}.wav", dtype="int16")
        clip, _ = soundfile.read(path, dtype="int16")
        assert rate == RATE and np.array_equal(steps[-len(clip):], clip)
        assert len(steps) > 3 * len(clip)  # three steps with silence between

    code, stderr = run_here("sample", "text", "-m", runs / "text", "-n", 2, "-o", tmp_path / "lines.txt",
                            "--trajectory", tmp_path / "text.jsonl", *FAST)
    assert code == 0, stderr
    steps = [json.loads(line) for line in (tmp_path / "text.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [0, 1, 2] and steps[0]["t"] > steps[-1]["t"]
    assert steps[-1]["texts"] == (tmp_path / "lines.txt").read_text().splitlines()


def test_edits_write_trajectories_and_a_bad_target_costs_nothing(runs, tmp_path):
    _inputs(tmp_path)
    for modality, command, options, suffix in (
            ("image", "restore", ["-i", tmp_path / "in.png", "--task", "denoise:0.1"], ".png"),
            ("audio", "style", ["-i", tmp_path / "in.wav"], ".png"),
            ("text", "inpaint", ["-i", tmp_path / "in.txt", "--mask", "1"], ".jsonl")):
        target = tmp_path / f"{command}-{modality}{suffix}"
        code, stderr = run_here(command, modality, "-m", runs / modality, *options, "-o", tmp_path / "out",
                                "--trajectory", target, *FAST)
        assert code == 0 and target.is_file() and provenance.read(target)["input_sha256"], stderr
    before = set(tmp_path.rglob("*"))
    for target in (tmp_path / "steps.gif", tmp_path / "missing" / "steps.png"):
        code, stderr = run_here("sample", "image", "-m", runs / "image", "-o", tmp_path / "x.png", "--trajectory",
                                target, *FAST)
        assert code == 2 and stderr.startswith("error: --trajectory") and set(tmp_path.rglob("*")) == before


def _credentials(folder):
    """A certificate chain (signer, then the test's own CA) and the signer's EC P-256 key, as PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject, issuer, public, signing_key, ca: bool):
        usage = dict(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                     data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                     decipher_only=False)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=7))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
                   .add_extension(x509.KeyUsage(**usage), critical=True))
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        if not ca:  # C2PA wants a leaf for signing documents, tied to its issuer
            builder = (builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                       .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
                                      critical=False))
        return builder.sign(signing_key, hashes.SHA256())

    def name(common):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "diffkit tests")])

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate(name("test CA"), name("test CA"), ca_key.public_key(), ca_key, True)
    leaf = certificate(name("test signer"), ca.subject, key.public_key(), ca_key, False)
    pem = serialization.Encoding.PEM
    (folder / "cert.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (folder / "key.pem").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


def test_c2pa_content_credentials_are_signed_offline_with_the_users_certificate(runs, tmp_path):
    pytest.importorskip("c2pa")  # diffkit[c2pa], which `make test` installs
    cert, key = _credentials(tmp_path)
    for modality, output in (("image", "signed.png"), ("audio", "signed.wav")):
        code, stderr = run_here("sample", modality, "-m", runs / modality, "-n", 1, "-o", tmp_path / output,
                                "--c2pa-cert", cert, "--c2pa-key", key, *FAST)
        assert code == 0, stderr
        data = (tmp_path / output).read_bytes()
        credentials = provenance.c2pa_manifest(data)
        assert credentials["validation_state"] == "Valid" and credentials["issuer"] == "diffkit tests"
        assert provenance.extract(data)["command"] == f"sample {modality}"  # our record survives the signing
    with Image.open(tmp_path / "signed.png") as image:
        assert image.size == (16, 16)
    (tmp_path / "plain.txt").write_text("not a certificate")
    before = set(tmp_path.rglob("*"))
    for options in (["--c2pa-cert", cert], ["--c2pa-cert", cert, "--c2pa-key", tmp_path / "missing.pem"],
                    ["--c2pa-cert", tmp_path / "plain.txt", "--c2pa-key", key]):
        code, stderr = run_here("sample", "image", "-m", runs / "image", "-o", tmp_path / "x.png", *options, *FAST)
        assert code == 2 and stderr.startswith("error: ") and "c2pa" in stderr and set(tmp_path.rglob("*")) == before
