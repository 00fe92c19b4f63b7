"""What only DirectoryArtifactStore does: file URIs, and symlinks that lead out of its root (the shared behaviour
of every ArtifactStore is in tests/functional/test_repository_contract.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from af2jobs import errors
from af2jobs.adapters.local.files import DirectoryArtifactStore


@pytest.fixture
def store(tmp_path: Path) -> DirectoryArtifactStore:
    return DirectoryArtifactStore(tmp_path / "store")


def test_url_is_a_file_uri(store: DirectoryArtifactStore) -> None:
    store.put_bytes("jobs/abc/report.html", b"<html/>")
    url = store.url("jobs/abc/report.html", expires_s=60)
    assert url == (store.root / "jobs/abc/report.html").as_uri() and url.startswith("file:///")


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


def test_delete_prefix_on_a_symlinked_job_keeps_the_target(store: DirectoryArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"k")
    (store.root / "jobs").mkdir()
    (store.root / "jobs" / "evil").symlink_to(outside, target_is_directory=True)
    store.delete_prefix("evil")
    assert (outside / "keep").read_bytes() == b"k"
    assert not (store.root / "jobs" / "evil").exists()
