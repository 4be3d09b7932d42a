"""Prepared data folders and ``jaxhpo data prepare`` (issue 25): every malformed folder or
argument is one line naming the file, key or argument, before anything is built or created;
a split's sha256 is verified once and stamped."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jaxhpo import cli
from jaxhpo.data import manifest as manifests
from jaxhpo.data.manifest import read_manifest
from jaxhpo.data.prepare import prepare_data


def _corpus(folder, lines=400):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(" ".join(rng.choice(words, size=6)) + f" {i}\n" for i in range(lines))
    (folder / "a.txt").write_text(text)
    return folder


@pytest.fixture
def data(tmp_path):
    """A freshly prepared (bytes) data folder."""
    prepare_data(str(_corpus(tmp_path / "corpus")), tmp_path / "d", log=None)
    return tmp_path / "d"


def _edit(folder, change):
    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m))


def _drop(dotted):
    def change(m):
        *parents, last = dotted.split(".")
        for p in parents:
            m = m[p]
        del m[last]

    return change


def _one_line(fn, *args, match):
    with pytest.raises(ValueError, match=match) as e:
        fn(*args)
    assert "\n" not in str(e.value)


def test_manifest_not_json_names_the_file(data):
    (data / "manifest.json").write_text("{'splits': oops")
    _one_line(read_manifest, data, match=r"^task.data: .*manifest.json is not JSON \(.* line 1")


@pytest.mark.parametrize(
    "key", ["dtype", "splits", "splits.val.sha256", "splits.train.tokens", "tokenizer.vocab_size"]
)
def test_manifest_missing_key_names_the_key(data, key):
    _edit(data, _drop(key))
    _one_line(read_manifest, data, match=rf"manifest.json: missing key '{key}'")


def test_manifest_key_of_the_wrong_type_names_the_key(data):
    _edit(data, lambda m: m["splits"]["val"].update(tokens="many"))
    _one_line(read_manifest, data, match=r"key 'splits.val.tokens' must be a int, got 'many'")


def test_split_changed_after_prepare_fails_its_sha256(data):
    path = data / "train.bin"
    before = path.stat()
    raw = bytearray(path.read_bytes())
    raw[10] ^= 1  # same size, one bit
    path.write_bytes(bytes(raw))
    # even with its mtime put back, the change is seen (ctime is in the stamp too)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    _one_line(read_manifest, data, match=r"train.bin does not match the manifest's sha256")


def test_sha256_is_verified_once_and_stamped(data, monkeypatch):
    for s in manifests.SPLITS:
        assert (data / f"{s}.bin{manifests.STAMP_SUFFIX}").is_file()  # prepare stamps
    calls = []
    real = manifests.scan
    monkeypatch.setattr(manifests, "scan", lambda *a: calls.append(a) or real(*a))
    read_manifest(data)
    assert calls == []  # the stamps hold: nothing re-read
    os.utime(data / "val.bin")  # touched: hashed again, once
    read_manifest(data)
    read_manifest(data)
    assert [c[0].name for c in calls] == ["val.bin"]


def test_read_only_folder_is_hashed_without_a_stamp(data, monkeypatch):
    for s in manifests.SPLITS:
        (data / f"{s}.bin{manifests.STAMP_SUFFIX}").unlink()
    monkeypatch.setattr(manifests, "write_stamp", lambda *a: None)
    assert read_manifest(data)["splits"]["train"]["tokens"] > 0


def test_manifest_vocabulary_smaller_than_the_tokenizers(data):
    _edit(data, lambda m: m["tokenizer"].update(vocab_size=100))
    _one_line(
        read_manifest,
        data,
        match=r"tokenizer.vocab_size 100 is smaller than the tokenizer's vocabulary \(256",
    )


def test_token_id_outside_the_manifest_vocabulary(data):
    """Files whose sha256 matches (rewritten with the manifest) but whose ids the model's
    embedding (the manifest's vocab_size) does not have: every member would diverge."""
    m = json.loads((data / "manifest.json").read_text())
    ids = np.array([1, 2, 60000, 3, 4], np.uint16)
    m["dtype"] = "uint16"
    for s in manifests.SPLITS:
        (data / f"{s}.bin").write_bytes(ids.tobytes())
        sha = manifests.scan(data / f"{s}.bin", ids.dtype)[0]
        m["splits"][s].update(tokens=len(ids), sha256=sha)
    (data / "manifest.json").write_text(json.dumps(m))
    _one_line(
        read_manifest,
        data,
        match=r"train.bin holds token id 60000, outside the manifest's tokenizer.vocab_size 256",
    )


def test_empty_split_is_named(data):
    (data / "test.bin").write_bytes(b"")
    _edit(data, lambda m: m["splits"]["test"].update(tokens=0))
    _one_line(read_manifest, data, match=r"^task.data: split 'test' \(.*test.bin\) is empty")


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda d: (d / "manifest.json").write_text("nope"), "manifest.json is not JSON"),
        (lambda d: _edit(d, _drop("splits.val.file")), "missing key 'splits.val.file'"),
        (lambda d: (d / "val.bin").write_bytes(b"\0" * (d / "val.bin").stat().st_size), "sha256"),
        (lambda d: _edit(d, lambda m: m["tokenizer"].update(vocab_size=9)), "smaller than"),
    ],
    ids=["not-json", "missing-key", "sha256", "vocabulary"],
)
def test_run_on_a_spoilt_data_folder_is_one_line_before_building(
    data, tmp_path, capsys, no_compile, spoil, message
):
    spoil(data)
    code = cli.main(["run", f"task.data={data}", f"out_dir={tmp_path / 'runs'}", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("jaxhpo: error: task.data: ") and message in err[0], err
    assert not (tmp_path / "runs").exists()


# -- jaxhpo data prepare ---------------------------------------------------------------------


def _prepare(capsys, *args):
    code = cli.main(["data", "prepare", *map(str, args)])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tokenizer", "bpe", "--vocab-size", "1000000000"], "--vocab-size: must be in [257, 2"),
        (["--tokenizer", "bpe", "--vocab-size", "100"], "--vocab-size: must be in [257, 2"),
        (["--vocab-size", "1000000000"], "--vocab-size: must be in [1, 2**20] for bytes"),
        (["--val-frac", "0.7"], "--val-frac: must be in (0, 0.5)"),
        (["--test-frac", "nan"], "--test-frac: must be in (0, 0.5)"),
        (["--tokenizer", "bpe", "--sample-mb", "nan"], "--sample-mb: must be a number > 0"),
        (["--tokenizer", "bpe", "--sample-mb", "-1"], "--sample-mb: must be a number > 0"),
    ],
)
def test_data_prepare_checks_arguments_before_creating_anything(tmp_path, capsys, args, message):
    corpus = _corpus(tmp_path / "corpus")
    out = tmp_path / "new" / "d"
    code, err = _prepare(capsys, corpus, "--out", out, *args)
    assert code == 2 and err == [f"jaxhpo: error: {err[0][len('jaxhpo: error: ') :]}"], err
    assert message in err[0], err
    assert not (tmp_path / "new").exists()  # --out not created, no progress printed


def test_data_prepare_missing_corpus_or_bad_out_creates_nothing(tmp_path, capsys):
    code, err = _prepare(capsys, tmp_path / "nope", "--out", tmp_path / "d")
    assert code == 2 and len(err) == 1 and "CORPUS: path does not exist" in err[0]
    (tmp_path / "file").write_text("x")
    code, err = _prepare(capsys, _corpus(tmp_path / "c"), "--out", tmp_path / "file")
    assert code == 2 and err == [
        f"jaxhpo: error: --out: {tmp_path / 'file'} exists and is not a folder"
    ]
    assert not (tmp_path / "d").exists()


def test_data_prepare_bytes_too_short_to_split_is_refused_before_creating(tmp_path, capsys):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("a\nb\n")  # bytes are tokens: 4 tokens, known before reading
    code, err = _prepare(capsys, tiny, "--out", tmp_path / "new")
    assert code == 2 and err == [
        "jaxhpo: error: CORPUS: 4 tokens are too few to split into train/val/test"
    ], err
    assert not (tmp_path / "new").exists()


def test_data_prepare_refused_late_leaves_no_temporary_file(tmp_path, capsys):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("alpha beta\ngamma\n")  # BPE: too few tokens, found after tokenizing
    bpe = ["--tokenizer", "bpe", "--vocab-size", "300"]
    code, err = _prepare(capsys, tiny, "--out", tmp_path / "new", *bpe)
    assert code == 2 and "too few to split" in err[-1]
    assert not (tmp_path / "new").exists()  # made by this call: removed
    (tmp_path / "kept").mkdir()
    code, err = _prepare(capsys, tiny, "--out", tmp_path / "kept", *bpe)
    assert code == 2 and list((tmp_path / "kept").iterdir()) == []  # no tokens.tmp left
