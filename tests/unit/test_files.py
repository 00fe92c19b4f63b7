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


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomic_writes_and_staged_folders_get_the_modes_of_the_umask(tmp_path: Path, umask: int) -> None:
    """A result folder is all readable or all private, as the umask says: no file or folder is left 0600/0700
    because it was made through a temporary file (mkstemp) or folder (mkdtemp)."""
    from af2jobs import atomic

    previous = os.umask(umask)
    try:
        with atomic.staging_dir(tmp_path / "record") as staging:
            atomic.write_json(staging / "timings.json", {})
            (staging / "plain.pdb").write_text("ATOM\n")  # open()'s mode: what every file should match
        atomic.write_bytes(tmp_path / "record" / "report.html", b"<html>")
        store = DirectoryArtifactStore(tmp_path / "store")
        store.put_bytes("jobs/a/output/x/ranked_0.pdb", b"ATOM\n")
        secret = tmp_path / "secret"
        atomic.create_once(secret, b"s" * 32)
        from af2jobs.adapters.local.notify import write_outbox

        mail = write_outbox(tmp_path / "outbox", {"job_id": "j", "event": "succeeded", "artifacts": {}})
    finally:
        os.umask(previous)
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    record = tmp_path / "record"
    assert mode(record) == 0o777 & ~umask
    assert {p.name: mode(p) for p in record.iterdir()} == dict.fromkeys(
        ["timings.json", "plain.pdb", "report.html"], 0o666 & ~umask)
    assert mode(tmp_path / "store" / "jobs" / "a" / "output" / "x" / "ranked_0.pdb") == 0o666 & ~umask
    assert mode(secret) == 0o600  # a secret stays its owner's
    assert mode(mail) == 0o600  # so does a message holding key-less links
