"""DirectoryArtifactStore: keys stay inside the root, writes are atomic, jobs are isolated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from af2jobs import errors
from af2jobs.adapters.local.files import DirectoryArtifactStore


@pytest.fixture
def store(tmp_path: Path) -> DirectoryArtifactStore:
    return DirectoryArtifactStore(tmp_path / "store")


def test_round_trip_and_overwrite(store: DirectoryArtifactStore) -> None:
    store.put_bytes("jobs/abc/out/ranked_0.pdb", b"ATOM 1")
    store.put_bytes("jobs/abc/out/ranked_0.pdb", b"ATOM 2")
    assert store.get_bytes("jobs/abc/out/ranked_0.pdb") == b"ATOM 2"
    # No temporary file is left behind, on disk or in a listing.
    assert os.listdir(store.root / "jobs/abc/out") == ["ranked_0.pdb"]


def test_put_file_copies(store: DirectoryArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "local.fasta"
    src.write_bytes(b">a\nMKT\n")
    store.put_file("input/lab/a.fasta", src)
    assert store.get_bytes("input/lab/a.fasta") == b">a\nMKT\n"


def test_failed_write_leaves_the_old_object(store: DirectoryArtifactStore, tmp_path: Path) -> None:
    store.put_bytes("input/a.fasta", b"old")
    with pytest.raises(FileNotFoundError):
        store.put_file("input/a.fasta", tmp_path / "missing")
    assert store.get_bytes("input/a.fasta") == b"old"
    assert os.listdir(store.root / "input") == ["a.fasta"]


def test_missing_object_is_not_found(store: DirectoryArtifactStore) -> None:
    with pytest.raises(errors.NotFoundError):
        store.get_bytes("jobs/nope/x")
    with pytest.raises(errors.NotFoundError):
        store.url("jobs/nope/x")


def test_list_uses_string_prefixes_and_sorts(store: DirectoryArtifactStore) -> None:
    for key in ["jobs/ab/x", "jobs/abc/y", "jobs/abc/sub/z", "jobs/b/w", "input/q.fasta"]:
        store.put_bytes(key, b"1")
    assert store.list("jobs/ab/") == ["jobs/ab/x"]
    assert store.list("jobs/ab") == ["jobs/ab/x", "jobs/abc/sub/z", "jobs/abc/y"]
    assert store.list("input/") == ["input/q.fasta"]
    assert store.list("") == ["input/q.fasta", "jobs/ab/x", "jobs/abc/sub/z", "jobs/abc/y", "jobs/b/w"]
    assert store.list("jobs/none/") == []


def test_url_is_a_file_uri(store: DirectoryArtifactStore) -> None:
    store.put_bytes("jobs/abc/report.html", b"<html/>")
    url = store.url("jobs/abc/report.html", expires_s=60)
    assert url == (store.root / "jobs/abc/report.html").as_uri() and url.startswith("file:///")


BAD_KEYS = [
    "/etc/passwd",
    "../outside",
    "jobs/../../outside",
    "jobs/abc/../../../outside",
    "input/..",
    "jobs/./abc",
    "jobs//abc",
    "jobs\\abc\\x",
    "input/a\x00b",
    "input/a\nb",
    "",
    "other/x",
    "jobs",
    "jobs/abc/.tmp-x",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected_everywhere(store: DirectoryArtifactStore, key: str) -> None:
    for call in (lambda: store.put_bytes(key, b"x"), lambda: store.get_bytes(key), lambda: store.url(key)):
        with pytest.raises(errors.ValidationError):
            call()
    assert not (store.root.parent / "outside").exists()


def test_symlink_out_of_the_root_is_refused(store: DirectoryArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    (store.root / "input").mkdir()
    (store.root / "input" / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(errors.ValidationError, match="outside"):
        store.get_bytes("input/link/secret")
    with pytest.raises(errors.ValidationError, match="outside"):
        store.put_bytes("input/link/new", b"x")
    assert sorted(os.listdir(outside)) == ["secret"]
    assert store.list("input/") == []


def test_delete_prefix_removes_exactly_one_job(store: DirectoryArtifactStore) -> None:
    store.put_bytes("jobs/abc/input.fasta", b"1")
    store.put_bytes("jobs/abc/out/ranked_0.pdb", b"2")
    store.put_bytes("jobs/abcd/input.fasta", b"3")  # shares the prefix "abc"
    store.put_bytes("jobs/ab/input.fasta", b"4")
    store.put_bytes("input/abc", b"5")
    assert store.delete_prefix("abc") == 2
    assert store.list("") == ["input/abc", "jobs/ab/input.fasta", "jobs/abcd/input.fasta"]
    assert store.delete_prefix("abc") == 0  # already gone: nothing to do


@pytest.mark.parametrize("job_id", ["", "..", "../x", "a/b", ".", "a\x00"])
def test_delete_prefix_refuses_odd_ids(store: DirectoryArtifactStore, job_id: str) -> None:
    store.put_bytes("jobs/a/x", b"1")
    with pytest.raises(errors.ValidationError):
        store.delete_prefix(job_id)
    assert store.list("") == ["jobs/a/x"]


def test_delete_prefix_on_a_symlinked_job_keeps_the_target(store: DirectoryArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"k")
    (store.root / "jobs").mkdir()
    (store.root / "jobs" / "evil").symlink_to(outside, target_is_directory=True)
    store.delete_prefix("evil")
    assert (outside / "keep").read_bytes() == b"k"
    assert not (store.root / "jobs" / "evil").exists()
