"""helpers.data: shipped corpora, checksums, clear errors, document splits."""
import hashlib
import importlib.util
import shutil

import pytest

from helpers import data
from helpers.runtime import repo_root

SHIPPED = ["arithmetic.txt", "checkpoints/base.json", "checkpoints/base.pt", "checkpoints/judge.json",
           "checkpoints/judge.pt", "checkpoints/pair_judge.json", "checkpoints/pair_judge.pt", "checkpoints/rl.json", "checkpoints/rl.pt",
           "checkpoints/rm.json", "checkpoints/rm.pt", "checkpoints/sft.json", "checkpoints/sft.pt",
           "checkpoints/sft_mix.json", "checkpoints/sft_mix.pt", "code_stdlib.txt", "tinyshakespeare.txt",
           "tokenizer.json", "tokens.npz"]


def _build_script():
    spec = importlib.util.spec_from_file_location("build_data", repo_root() / "scripts" / "build_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """A private copy of data/ that COURSE_DATA points at (so tests can damage it)."""
    d = tmp_path / "data"
    shutil.copytree(repo_root() / "data", d)
    monkeypatch.setenv("COURSE_DATA", str(d))
    return d


def test_every_shipped_file_is_listed_and_verifies():
    sums = data.verify_data()
    assert sorted(sums) == SHIPPED
    for name, h in sums.items():  # independent hash of the bytes
        assert hashlib.sha256((repo_root() / "data" / name).read_bytes()).hexdigest() == h


def test_shakespeare_is_the_handed_over_file():
    text = data.load_text("shakespeare")
    assert hashlib.md5(text.encode("utf-8")).hexdigest() == "6fb458f1232090904fb40fe944165e91"


def test_load_text_every_domain():
    sizes = {d: len(data.load_text(d).encode()) for d in data.DOMAINS}
    assert data.DOMAINS == ("shakespeare", "code", "arithmetic")
    assert 1_000_000 <= sizes["code"] <= 2_000_000
    assert 300_000 <= sizes["arithmetic"] <= 500_000
    with pytest.raises(ValueError, match="unknown domain"):
        data.load_text("poetry")


def test_altered_file_names_file_and_fix(data_copy):
    p = data_copy / "arithmetic.txt"
    raw = bytearray(p.read_bytes())
    raw[100] ^= 1  # flip one bit
    p.write_bytes(bytes(raw))
    with pytest.raises(data.DataFileError) as e:
        data.load_text("arithmetic")
    msg = str(e.value)
    assert "arithmetic.txt" in msg and "altered" in msg
    assert "git checkout -- data/arithmetic.txt" in msg and "python scripts/build_data.py arithmetic" in msg
    assert isinstance(e.value, RuntimeError)
    data.load_text("code")  # the others still load
    with pytest.raises(data.DataFileError, match="arithmetic.txt"):
        data.verify_data()


def test_missing_and_unlisted_files(data_copy):
    (data_copy / "code_stdlib.txt").unlink()
    with pytest.raises(data.DataFileError, match=r"code_stdlib\.txt is missing.*build_data\.py code"):
        data.load_text("code")
    (data_copy / "extra.bin").write_bytes(b"x")
    with pytest.raises(data.DataFileError, match="no line in"):
        data.data_path("extra.bin")
    data.record_checksum("extra.bin")
    assert data.data_path("extra.bin").read_bytes() == b"x"
    assert "extra.bin" in data.read_checksums()


def test_malformed_checksum_list(data_copy):
    (data_copy / "SHA256SUMS").write_text("not a checksum line\n")
    with pytest.raises(data.DataFileError, match="malformed"):
        data.load_text("shakespeare")
    (data_copy / "SHA256SUMS").unlink()
    with pytest.raises(data.DataFileError, match="SHA256SUMS is missing"):
        data.load_text("shakespeare")


def test_verification_notices_a_change_after_a_good_load(data_copy):
    data.load_text("shakespeare")
    p = data_copy / "tinyshakespeare.txt"
    p.write_text(p.read_text() + "extra line\n")
    with pytest.raises(data.DataFileError, match="tinyshakespeare.txt"):
        data.load_text("shakespeare")


@pytest.mark.parametrize("domain", data.DOMAINS)
def test_splits_partition_documents_without_overlap(domain):
    text = data.load_text(domain)
    docs = data.documents(domain)
    sp = data.split_documents(domain)
    frac = sum(map(len, sp["val"])) / sum(map(len, docs))
    assert 0.07 < frac < 0.16, frac
    if domain == "shakespeare":  # one running text, cut once at a blank line
        assert docs == [text] and sp["train"][0] + sp["val"][0] == text
        assert sp["train"][0].endswith("\n\n")
        return
    assert sorted(sp["train"] + sp["val"]) == sorted(docs)
    assert not set(sp["train"]) & set(sp["val"])
    if domain == "code":
        assert "".join(docs) == text  # the files are an exact partition of the text


def test_code_documents_are_whole_stdlib_files():
    build = _build_script()
    docs = data.documents("code")
    assert [d.splitlines()[0] for d in docs] == [data.CODE_HEADER.format(path=p).strip() for p in build.STDLIB_MODULES]
    licence = (repo_root() / "data" / "LICENSE-PSF.txt").read_text()
    assert build.PINNED_PYTHON in licence and "PSF License" in licence
    assert all(f"Lib/{p}" in licence for p in build.STDLIB_MODULES)
    for d in docs:
        compile(d, "<stdlib>", "exec")  # every file is complete, valid Python


def test_arithmetic_file_is_what_the_generator_makes():
    from helpers.arithmetic import generate_problems

    build = _build_script()
    problems = generate_problems(build.N_ARITHMETIC, build.ARITHMETIC_SEED)
    assert data.documents("arithmetic") == [p.render() for p in problems]


def test_arithmetic_val_questions_not_in_train():
    sp = data.split_documents("arithmetic")
    q = lambda doc: doc.split("\n")[0]  # noqa: E731
    train_q = {q(d) for d in sp["train"]}
    assert len(train_q) == len(sp["train"])
    assert not any(q(d) in train_q for d in sp["val"])


def test_bad_val_fraction():
    with pytest.raises(ValueError, match="val_fraction"):
        data.split_documents("code", val_fraction=1.5)
