"""The database loader against a real HTTP server on loopback: ranges, validators, checksums, unpacking, reruns."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import shutil
import tarfile
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from af2jobs import dbload
from af2jobs.dbload import Http, Loader, Source

FASTA = b"".join(b">seq%d\n%s\n" % (i, b"ACDEFGHIKLMNPQRSTVWY" * 20) for i in range(400))


class Files:
    """What the server serves: path -> body and headers; every request is recorded."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.goog_hash: dict[str, str] = {}  # path -> x-goog-hash value
        self.cut_after: dict[str, int] = {}  # path -> drop the connection after this many bytes, once
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    def add(self, path: str, body: bytes, *, etag: str = '"v1"', md5: bool = True) -> str:
        self.bodies[path] = body
        self.etags[path] = etag
        if md5:
            self.goog_hash[path] = "md5=" + base64.b64encode(hashlib.md5(body).digest()).decode()
        return path


def _handler(files: Files):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _answer(self, head: bool) -> None:
            files.requests.append((self.command, self.path, dict(self.headers)))
            body = files.bodies.get(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            etag = files.etags[self.path]
            start = 0
            ranged = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if ranged and not head and (if_range is None or if_range == etag):
                start = int(ranged.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
                self.send_header("ETag", etag)
                if self.path in files.goog_hash:
                    self.send_header("x-goog-hash", "crc32c=AAAAAA==")
                    self.send_header("x-goog-hash", files.goog_hash[self.path])
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if head:
                return
            payload = body[start:]
            cut = files.cut_after.pop(self.path, None)
            if cut is not None:
                self.wfile.write(payload[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # the client sees a short body: IncompleteRead
                return
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def server():
    files = Files()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    files.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield files
    httpd.shutdown()
    httpd.server_close()


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _tar(members: dict[str, bytes], gz: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _loader(tmp_path: Path, **kwargs) -> tuple[Loader, list[str]]:
    messages: list[str] = []
    loader = Loader(tmp_path / "fsx" / "databases", tmp_path / "fsx" / "dbload", http=Http(timeout_s=10),
                    log=messages.append, backoff_s=0.01, **kwargs)
    return loader, messages


def _fasta_source(server: Files, name: str = "uniref90", **kwargs) -> Source:
    path = server.add(f"/{name}.fasta.gz", _gz(FASTA), **kwargs)
    return Source(name, server.base + path, "gunzip", f"{name}_test", target=f"{name}.fasta")


def test_loads_a_gzipped_database_verified_against_the_servers_md5(server, tmp_path):
    loader, _ = _loader(tmp_path)
    outcome = loader.load(_fasta_source(server))

    assert outcome.status == "loaded", outcome.detail
    target = loader.root / "uniref90"
    assert (target / "uniref90.fasta").read_bytes() == FASTA
    version = dbload.read_version(target)
    assert version["version"].startswith("uniref90_test sha256:")
    assert version["source"] == server.base + "/uniref90.fasta.gz"
    assert version["verified"].startswith("md5:") and "(server)" in version["verified"]
    assert version["sha256"] == hashlib.sha256(_gz(FASTA)).hexdigest()
    # The archive is gone, and nothing half-written is left beside the databases.
    assert not list((loader.work / "downloads").iterdir())
    assert sorted(p.name for p in loader.root.iterdir()) == ["uniref90"]


def test_a_connection_cut_mid_file_resumes_with_a_range_request(server, tmp_path):
    source = _fasta_source(server)
    server.cut_after["/uniref90.fasta.gz"] = 1000
    loader, messages = _loader(tmp_path)

    outcome = loader.load(source)

    assert outcome.status == "loaded", outcome.detail
    assert (loader.root / "uniref90" / "uniref90.fasta").read_bytes() == FASTA
    gets = [headers for method, path, headers in server.requests if method == "GET"]
    assert len(gets) == 2
    assert gets[1]["Range"] == "bytes=1000-" and gets[1]["If-Range"] == '"v1"'
    assert any("resuming" in m for m in messages)


def test_a_partial_file_from_an_earlier_run_is_continued_not_restarted(server, tmp_path):
    source = _fasta_source(server)
    loader, _ = _loader(tmp_path)
    body = server.bodies["/uniref90.fasta.gz"]
    downloads = loader.work / "downloads"
    downloads.mkdir(parents=True)
    (downloads / "uniref90.fasta.gz.part").write_bytes(body[:777])
    (downloads / "uniref90.fasta.gz.part.json").write_text(
        json.dumps({"url": source.url, "validator": '"v1"', "length": len(body)})
    )

    assert loader.load(source).status == "loaded"

    gets = [headers for method, _, headers in server.requests if method == "GET"]
    assert [g.get("Range") for g in gets] == ["bytes=777-"]
    assert (loader.root / "uniref90" / "uniref90.fasta").read_bytes() == FASTA


def test_a_partial_file_of_an_older_version_is_thrown_away(server, tmp_path):
    source = _fasta_source(server, etag='"v2"')
    loader, messages = _loader(tmp_path)
    downloads = loader.work / "downloads"
    downloads.mkdir(parents=True)
    (downloads / "uniref90.fasta.gz.part").write_bytes(b"stale bytes of last month's release")
    (downloads / "uniref90.fasta.gz.part.json").write_text(
        json.dumps({"url": source.url, "validator": '"v1"', "length": 10**6})
    )

    assert loader.load(source).status == "loaded"

    gets = [headers for method, _, headers in server.requests if method == "GET"]
    assert [g.get("Range") for g in gets] == [None]
    assert (loader.root / "uniref90" / "uniref90.fasta").read_bytes() == FASTA
    assert any("another version" in m for m in messages)


def test_a_checksum_mismatch_fails_deletes_the_file_and_installs_nothing(server, tmp_path):
    source = _fasta_source(server)
    server.goog_hash["/uniref90.fasta.gz"] = "md5=" + base64.b64encode(hashlib.md5(b"other").digest()).decode()
    loader, _ = _loader(tmp_path)

    outcome = loader.load(source)

    assert outcome.status == "failed"
    assert "ChecksumError" in outcome.detail and "md5" in outcome.detail
    assert not (loader.root / "uniref90").exists()
    assert not list((loader.work / "downloads").iterdir())


def test_a_pinned_sha256_is_what_the_download_is_held_to(server, tmp_path):
    source = _fasta_source(server, md5=False)
    good = replace(source, checksum="sha256:" + hashlib.sha256(_gz(FASTA)).hexdigest())
    bad = replace(source, name="other", checksum="sha256:" + "0" * 64)
    loader, _ = _loader(tmp_path)

    assert loader.load(good).status == "loaded"
    assert "(pinned)" in dbload.read_version(loader.root / "uniref90")["verified"]
    assert loader.load(bad).status == "failed"


def test_metalink_md5_is_used_when_the_server_sends_none(server, tmp_path):
    source = _fasta_source(server, md5=False)
    md5 = hashlib.md5(_gz(FASTA)).hexdigest()
    server.add("/RELEASE.metalink", (
        '<?xml version="1.0"?><metalink xmlns="http://www.metalinker.org/" version="3.0"><files>'
        '<file name="other.gz"><verification><hash type="md5">ffff</hash></verification></file>'
        f'<file name="uniref90.fasta.gz"><size>1</size><verification><hash type="md5">{md5}</hash>'
        "</verification></file></files></metalink>"
    ).encode(), md5=False)
    server.goog_hash.pop("/uniref90.fasta.gz", None)
    loader, _ = _loader(tmp_path)

    outcome = loader.load(replace(source, checksum_url=server.base + "/RELEASE.metalink"))

    assert outcome.status == "loaded", outcome.detail
    assert dbload.read_version(loader.root / "uniref90")["verified"] == f"md5:{md5} (metalink)"


def test_uniprot_is_trembl_then_swissprot_in_one_fasta_each_file_verified(server, tmp_path):
    trembl, sprot = b">tr|A0A000|A0A000_HUMAN t\nMKV\n", b">sp|P00001|X_MOUSE s\nMAL\n"
    first = server.add("/uniprot_trembl.fasta.gz", _gz(trembl))
    second = server.add("/uniprot_sprot.fasta.gz", _gz(sprot))
    loader, _ = _loader(tmp_path)

    outcome = loader.load(replace(dbload.SOURCES["uniprot"], url=server.base + first, extra_url=server.base + second,
                                  checksum_url=None))

    assert outcome.status == "loaded", outcome.detail
    assert (loader.root / "uniprot" / "uniprot.fasta").read_bytes() == trembl + sprot
    verified = dbload.read_version(loader.root / "uniprot")["verified"]
    assert "uniprot_trembl.fasta.gz: md5:" in verified and "uniprot_sprot.fasta.gz: md5:" in verified
    assert not list((loader.work / "downloads").iterdir())


def test_a_tar_with_one_top_folder_is_flattened_into_the_database_folder(server, tmp_path):
    path = server.add("/UniRef30_2021_03.tar.gz", _tar({
        "UniRef30_2021_03/UniRef30_2021_03_a3m.ffdata": b"a3m data",
        "UniRef30_2021_03/UniRef30_2021_03_a3m.ffindex": b"index",
    }))
    loader, _ = _loader(tmp_path)

    outcome = loader.load(Source("uniref30", server.base + path, "tar", "UniRef30_2021_03"))

    assert outcome.status == "loaded", outcome.detail
    folder = loader.root / "uniref30"
    assert sorted(p.name for p in folder.iterdir()) == [
        "UniRef30_2021_03_a3m.ffdata", "UniRef30_2021_03_a3m.ffindex", "VERSION",
    ]


def test_a_tar_member_escaping_the_folder_is_refused(server, tmp_path):
    path = server.add("/evil.tar", _tar({"../../escaped.txt": b"x", "ok.txt": b"y"}, gz=False))
    loader, _ = _loader(tmp_path)

    outcome = loader.load(Source("params", server.base + path, "tar", "evil"))

    assert outcome.status == "failed"
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (loader.root / "params").exists()


def test_a_second_run_finds_everything_present_and_asks_the_server_nothing(server, tmp_path):
    source = _fasta_source(server)
    loader, _ = _loader(tmp_path)
    assert loader.load(source).status == "loaded"
    server.requests.clear()

    outcome = loader.load(source)

    assert outcome.status == "present"
    assert server.requests == []


def test_a_new_source_address_replaces_the_loaded_database(server, tmp_path):
    loader, _ = _loader(tmp_path)
    assert loader.load(_fasta_source(server)).status == "loaded"
    newer = server.add("/uniref90-2025.fasta.gz", _gz(FASTA[:1000]))

    outcome = loader.load(Source("uniref90", server.base + newer, "gunzip", "uniref90_2025", target="uniref90.fasta"))

    assert outcome.status == "loaded"
    assert (loader.root / "uniref90" / "uniref90.fasta").read_bytes() == FASTA[:1000]
    assert dbload.read_version(loader.root / "uniref90")["version"].startswith("uniref90_2025 ")


def test_main_loads_in_parallel_notifies_once_and_exits_nonzero_on_any_failure(server, tmp_path, monkeypatch):
    good = _fasta_source(server, name="uniref90")
    missing = Source("mgnify", server.base + "/missing.fa.gz", "gunzip", "mgnify_test", target="mgnify.fa")
    monkeypatch.setattr(dbload, "SOURCES", {"uniref90": good, "mgnify": missing})
    sent: list[tuple[str, str]] = []
    root = tmp_path / "fsx" / "databases"

    code = dbload.main(["--root", str(root), "--databases", "uniref90,mgnify"], http=Http(timeout_s=10),
                       notify=lambda subject, message: sent.append((subject, message)))

    assert code == 1
    assert len(sent) == 1
    subject, message = sent[0]
    assert subject.startswith("af2jobs databases: FAILED (1 loaded, 0 present, 1 failed)")
    assert "uniref90: loaded" in message and "mgnify: failed" in message and "HTTP 404" in message
    assert (root / "uniref90" / "VERSION").is_file()
    assert (tmp_path / "fsx" / "dbload").is_dir()  # the default work folder lies beside the root


def test_main_refuses_unknown_databases_and_a_work_folder_inside_the_root(tmp_path, capsys):
    assert dbload.main(["--root", str(tmp_path), "--databases", "pdb71"]) == 2
    assert "unknown database pdb71" in capsys.readouterr().err
    assert dbload.main(["--root", str(tmp_path), "--work", str(tmp_path / "w")]) == 2
    assert "outside --root" in capsys.readouterr().err


def test_the_published_sets_name_only_known_sources_in_the_pipeline_layout():
    from af2jobs.pipeline.databases import HHBLITS_DATABASES, JACKHMMER_DATABASES

    for names in dbload.SETS.values():
        assert set(names) <= set(dbload.SOURCES)
    # Every database the pipeline can search is loadable, under the folder name it looks in.
    assert set(JACKHMMER_DATABASES) | set(HHBLITS_DATABASES) <= set(dbload.SETS["full"])
    assert set(JACKHMMER_DATABASES) <= set(dbload.SETS["reduced"])
    # And the template databases, in the layout af2jobs.pipeline.databases.discover reads.
    assert set(dbload.TEMPLATES) == {"pdb70", "pdb_mmcif", "pdb_seqres"}
    assert all(set(dbload.TEMPLATES) <= set(names) for names in dbload.SETS.values())
    for source in dbload.SOURCES.values():
        scheme = {"mirror": "rsync://"}.get(source.unpack, "https://")
        assert source.url.startswith(scheme)
        assert source.unpack in ("gunzip", "tar", "none", "mirror", "colabfold")
        assert source.unpack not in ("gunzip", "none", "colabfold") or source.target
    # msa_mode mmseqs2's databases, under the names the pipeline looks in.
    from af2jobs.pipeline import mmseqs

    assert set(mmseqs.DATABASES) <= set(dbload.SETS["mmseqs"])
    assert dbload.SOURCES["pdb_seqres"].target == "pdb_seqres.txt"


MMCIF = "data_{id}\n_entry.id {id}\n"


def _pdb_tree(root: Path, ids: list[str]) -> Path:
    """The PDB's divided layout: mmCIF/<middle two letters>/<id>.cif.gz."""
    for pdb_id in ids:
        folder = root / "mmCIF" / pdb_id[1:3]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{pdb_id}.cif.gz").write_bytes(_gz(MMCIF.format(id=pdb_id.upper()).encode()))
    return root / "mmCIF"


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed (make tools installs it)")
def test_pdb_mmcif_is_mirrored_with_rsync_unzipped_flat_with_obsolete_dat(server, tmp_path):
    tree = _pdb_tree(tmp_path / "pdb", ["1ubq", "1cbs", "2abc"])
    obsolete = server.add("/obsolete.dat", b" LIST OF OBSOLETE COORDINATE ENTRIES AND SUCCESSORS\n"
                                           b"OBSLTE    01-JAN-20 1ABC     2ABC\n")
    source = replace(dbload.SOURCES["pdb_mmcif"], url=f"{tree}/", extra_url=server.base + obsolete)
    loader, messages = _loader(tmp_path)

    outcome = loader.load(source)

    assert outcome.status == "loaded", outcome.detail
    files = loader.root / "pdb_mmcif" / "mmcif_files"
    assert sorted(p.name for p in files.iterdir()) == ["1cbs.cif", "1ubq.cif", "2abc.cif"]
    assert (files / "1ubq.cif").read_text() == MMCIF.format(id="1UBQ")
    assert "OBSLTE" in (loader.root / "pdb_mmcif" / "obsolete.dat").read_text()
    version = dbload.read_version(loader.root / "pdb_mmcif")
    assert version["version"].endswith("3 entries") and version["source"] == f"{tree}/"
    assert not (loader.work / "staging" / "pdb_mmcif").exists()
    # The mirror stays in WORK: a later load transfers only what changed (here: one entry withdrawn).
    (tree / "ab" / "2abc.cif.gz").unlink()
    (loader.root / "pdb_mmcif" / "VERSION").unlink()
    assert loader.load(source).status == "loaded"
    assert sorted(p.name for p in files.iterdir()) == ["1cbs.cif", "1ubq.cif"]


def test_a_failing_mirror_is_a_failed_outcome_that_installs_nothing(tmp_path, monkeypatch):
    source = replace(dbload.SOURCES["pdb_mmcif"], url=str(tmp_path / "nowhere") + "/", extra_url=None)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    loader, _ = _loader(tmp_path)
    outcome = loader.load(source)
    assert outcome.status == "failed" and "rsync is not installed" in outcome.detail
    assert not (loader.root / "pdb_mmcif").exists()


def test_x_goog_hash_headers_are_read_in_both_forms():
    md5 = base64.b64encode(bytes.fromhex("00" * 15 + "ff")).decode()
    assert dbload.parse_goog_hash([f"crc32c=n03x6A==,md5={md5}"]) == {
        "crc32c": "9f4df1e8", "md5": "00" * 15 + "ff",
    }
    assert dbload.parse_goog_hash(["crc32c=n03x6A==", f"md5={md5}"])["md5"] == "00" * 15 + "ff"


def test_crc32c_digests_compare_with_the_servers_form(tmp_path):
    pytest.importorskip("google_crc32c", reason="google-crc32c is in the dev extra: pip install -e '.[dev]'")
    path = tmp_path / "check"
    path.write_bytes(b"123456789")  # the CRC-32C check value is 0xE3069283
    assert dbload.file_digests(path, ["crc32c"]) == {"crc32c": "e3069283"}
    assert dbload.parse_goog_hash([f"crc32c={base64.b64encode(bytes.fromhex('e3069283')).decode()}"]) == {
        "crc32c": "e3069283"
    }


def _colabfold_release(stem: str, prefix: Path) -> bytes:
    """A tar of ColabFold's published form (<stem>.tsv, _h, _seq, _aln: key TAB entry), made of a database in its
    layout (the demo's environmental one, built with MMseqs2's own commands)."""
    def entries(path: str):
        data = Path(path).read_bytes()
        for line in Path(f"{path}.index").read_text().splitlines():
            key, offset, length = line.split("\t")
            yield key, data[int(offset): int(offset) + int(length)].rstrip(b"\0").decode().strip()

    tsv = {part: "".join(f"{k}\t{v}\n" for k, v in entries(f"{prefix}{src}"))
           for part, src in (("", ""), ("_seq", "_seq"), ("_h", "_seq_h"))}
    tsv["_aln"] = "".join(f"{k}\t{row}\n" for k, v in entries(f"{prefix}_aln") for row in v.splitlines())
    return _tar({f"{stem}/{stem}{part}.tsv": text.encode() for part, text in tsv.items()})


@pytest.mark.pipeline  # a real MMseqs2 build and search, of the demo database
def test_colabfold_s_database_is_made_from_its_published_tsvs_and_searched(server, tmp_path, demo_db_root):
    from af2jobs.pipeline import databases, mmseqs

    env = mmseqs.prefix_in(demo_db_root / "mmseqs_env")
    path = server.add("/colabfold_envdb_test.tar.gz", _colabfold_release("colabfold_envdb_test", env))
    source = replace(dbload.SOURCES["mmseqs_env"], url=server.base + path, version="colabfold_envdb_test",
                     target="colabfold_envdb_test")
    loader, messages = _loader(tmp_path)
    (outcome,) = dbload.load_all(loader, [source])
    assert outcome.status == "loaded", (outcome.detail, messages)
    found = {d.name: d for d in databases.discover(loader.root)}
    prefix = found["mmseqs_env"].path
    assert prefix.name == "colabfold_envdb_test_db" and mmseqs.expandable(prefix) and mmseqs.padded(prefix)
    assert not list(prefix.parent.glob("*.tsv")) and list(prefix.parent.glob("*.idx*"))
    hba = ("VLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADALTNAVAHVDDMPNALSALSDLHAHKLRVDPVNFKLLSH"
           "CLLVTLAAHLPAEFTPAVHASLDKFLASVSTVLTSKYR")
    got = mmseqs.search({"hba": hba}, [("mmseqs_env", prefix)], {"hba": tmp_path / "got"}, cpus=2)
    want = mmseqs.search({"hba": hba}, [("mmseqs_env", env)], {"hba": tmp_path / "want"}, cpus=2)
    assert got == want and got["hba"]["mmseqs_env"] > 20  # the same rows as the database it was made of
    assert [o.status for o in dbload.load_all(loader, [source])] == ["present"]


def test_the_mmseqs_set_loads_colabfold_s_databases_and_the_templates():
    names = dbload.SETS["mmseqs"]
    assert {"mmseqs_uniref", "mmseqs_env", *dbload.TEMPLATES} <= set(names)
    for name in ("mmseqs_uniref", "mmseqs_env"):
        source = dbload.SOURCES[name]
        assert source.unpack == "colabfold" and source.url.startswith("https://wwwuser.gwdg.de/~compbiol/colabfold/")
