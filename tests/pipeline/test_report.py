"""report.html: content, escaping, the plots, and the page in headless Chromium (no console errors, a screenshot)."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from af2jobs.pipeline import report

COMMENT = '<script>alert("x")</script> & <b>bold</b>'
NAME = "demo<img src=x onerror=alert(1)>"
L = 40


def _pdb(n: int) -> str:
    """An ideal alpha helix (N, CA, C, O of each residue) lying along x, so that a viewer sees it side on."""
    # Cylindrical coordinates of a helix's backbone atoms: radius (A), phase (degrees), rise (A) from N.
    atoms = (("N", 1.55, 0.0, 0.0), ("CA", 2.3, 28.0, 0.9), ("C", 1.6, 61.0, 1.6), ("O", 1.9, 65.0, 2.8))
    lines = ["REMARK   1 test structure </script><!--"]
    serial = 0
    for i in range(n):
        b = 95.0 if i < n // 2 else 40.0
        for name, r, phase, dz in atoms:
            serial += 1
            angle = math.radians(i * 100.0 + phase)
            x, y, z = 1.5 * i + dz, r * math.cos(angle), r * math.sin(angle)
            lines.append(f"ATOM  {serial:5d}  {name:<3} ALA A{i + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}"
                         f"  1.00{b:6.2f}           {name[0]}")
    return "\n".join(lines + ["END"]) + "\n"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "rec"
    d.mkdir()
    (d / "ranked_0.pdb").write_text(_pdb(L))
    plddt = [95.0] * (L // 2) + [40.0] * (L - L // 2)
    pae = (np.abs(np.subtract.outer(np.arange(L), np.arange(L))) * 0.5).round(2).tolist()
    (d / "confidence_model_3_full.json").write_text(json.dumps(
        {"model": "model_3", "plddt": plddt, "predicted_aligned_error": pae, "ptm": 0.4321, "untrained": True}))
    (d / "ranking_debug.json").write_text(json.dumps({"order": ["model_3", "model_1"]}))
    (d / "timings.json").write_text(json.dumps({"msa": {"search_s": 1.5}, "predict": {"seconds": 12.25}}))
    (d / "versions.json").write_text(json.dumps({
        "params_status": "UNTRAINED", "af2jobs": "0.1", "notes": ["note <i>x</i>"],
        "params": {"model_3": {"source": "UNTRAINED", "release": "none", "sha256": "ab" * 32}}}))
    msa = np.full((10, L), 21, dtype=np.int32)
    msa[:, :10] = 1  # 10 rows over the first 10 positions, 3 rows elsewhere
    msa[:3, :] = 1
    with open(d / "features.pkl", "wb") as fh:
        pickle.dump({"msa": msa}, fh)
    return d


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def test_report_has_every_section_and_the_plots(workdir: Path) -> None:
    cost = {"usd": {"total_usd": 0.0123, "cpu_usd": 0.002, "gpu_usd": 0.0103, "cpu_instance": "m6i.2xlarge",
                    "gpu_instance": "g5.2xlarge", "region": "us-east-1", "prices_as_of": "2025-06"}}
    page = report.write_report(workdir, "demo", comment="hello", cost=cost, viewer=False).read_text()
    for name in report.PLOTS:
        w, h = _png_size(workdir / name)
        assert w > 100 and h > 100
    assert 'id="untrained"' in page and "UNTRAINED PARAMETERS" in page
    assert "model_3" in page and "0.4321" in page and "67.50" in page  # best model, pTM, mean pLDDT
    assert "$0.0123" in page and "g5.2xlarge" in page and "12.25 s" in page
    assert page.count("data:image/png;base64,") == 3
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    # Without the viewer: the SVG trace, and the page says why.
    assert 'id="no-viewer"' in page and "<svg" in page and "<line" in page
    assert report.read_outputs(workdir)["msa_depth"] == [10] * 10 + [3] * (L - 10)


def test_trained_parameters_get_no_banner(workdir: Path) -> None:
    (workdir / "versions.json").write_text(json.dumps({"params_status": "official"}))
    conf = workdir / "confidence_model_3_full.json"
    conf.write_text(json.dumps({**json.loads(conf.read_text()), "untrained": False}))
    assert 'id="untrained"' not in report.write_report(workdir, "demo", viewer=False).read_text()


def test_user_text_is_escaped_and_data_cannot_close_the_script(workdir: Path) -> None:
    viewer = workdir / "fake3dmol.js"
    viewer.write_text("var $3Dmol = {}; // </script> inside the library")
    page = report.write_report(workdir, NAME, comment=COMMENT, viewer=viewer).read_text()
    assert COMMENT not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in page
    assert "<img src=x" not in page and "demo&lt;img src=x onerror=alert(1)&gt;" in page
    assert "note &lt;i&gt;x&lt;/i&gt;" in page
    # Two script elements (library, viewer) and their closing tags only: nothing inside them closes one early.
    assert page.count("<script>") == 2 and page.count("</script>") == 2
    assert "\\u003c/script\\u003e" in page and "<\\/script> inside the library" in page


def _ctx(**fields):
    """The fields of a pipeline Context that report writing reads (building a real one loads parameters)."""
    from types import SimpleNamespace

    from af2jobs.runconfig import RunConfig

    return SimpleNamespace(run=RunConfig(strategy="best"), **{"comment": "", "queue": None, "gpus": 1, **fields})


def test_the_pipeline_writes_the_jobs_comment_escaped_and_the_records_measured_cost(workdir: Path) -> None:
    from af2jobs import cost
    from af2jobs.fasta import FastaRecord

    record = FastaRecord(name=NAME, description="", sequence="A" * L, line=1)
    timings = json.loads((workdir / "timings.json").read_text())
    report.write_record_report(workdir, record, _ctx(comment=COMMENT, queue="mid", gpus=2), timings)
    page = (workdir / report.REPORT_NAME).read_text()
    assert COMMENT not in page and '<p id="comment">Comment: &lt;script&gt;alert(&quot;x&quot;)' in page
    # timings.json measured both phases: MSA 1.5 s on the MSA instance, prediction 12.25 s on 2 of g6e's GPU.
    cpu = cost.cpu_usd(1.5)
    gpu = cost.gpu_usd(12.25, instance_type="g6e.2xlarge", gpus=2)
    assert f"${cpu:.4f} for 1.5 s on m6i.2xlarge" in page
    assert f"${gpu:.4f} for 12.2 s on 2 GPU(s) of g6e.2xlarge" in page
    assert f"${cpu + gpu:.4f}" in page and "ESTIMATE" not in page


def test_a_phase_without_a_measurement_shows_the_estimate_labelled_as_such(workdir: Path) -> None:
    from af2jobs import cost

    priced = cost.record_cost({"predict": {"seconds": 30.0}}, length=L, queue="low")
    assert not priced["phases"]["cpu"]["measured"] and priced["phases"]["gpu"]["measured"]
    assert priced["phases"]["cpu"]["usd"] == cost.estimate(L, queue="low")["cpu_usd"]
    page = report.write_report(workdir, "demo", cost=priced, viewer=False).read_text()
    assert "(ESTIMATE: not measured)" in page and "partly or wholly an ESTIMATE" in page
    assert "for 30.0 s on 1 GPU(s) of g5.2xlarge</td>" in page
    # With no queue given (af2 predict), the record is priced on the queue `que: auto` picks for its length.
    assert cost.auto_queue(L) == "low" and cost.auto_queue(1500) == "high" and cost.auto_queue(5000) == "p4"


# ---------------------------------------------------------------------------------------------------------------
# Headless Chromium


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("headless Chromium is needed: `apt-get install -y chromium` (make test installs it)")


def _browse(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
           "--enable-unsafe-swiftshader", "--disable-background-networking", "--disable-component-update",
           "--no-first-run", "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--window-size=1000,1400", "--force-device-scale-factor=1", "--virtual-time-budget=5000", *extra, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(profile)})


def _console_errors(stderr: str) -> list[str]:
    # Chromium logs every console message (console.error included, without its level) and every uncaught
    # exception as ":CONSOLE" lines; the report writes none, so any such line is a failure. Excepted: the
    # browser's own "GL Driver Message (..., Performance, ...)" notes from its software WebGL (SwiftShader).
    return [line for line in stderr.splitlines()
            if (":CONSOLE" in line or "Uncaught" in line) and "GL Driver Message" not in line]


def test_console_scan_sees_errors_and_uncaught_exceptions(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><script>console.error("bad")</script><script>throw new Error("boom")</script>')
    found = _console_errors(_browse(bad, tmp_path / "profile").stderr)
    assert any('"bad"' in line for line in found) and any("Uncaught Error: boom" in line for line in found)


def _pixels(png: Path) -> np.ndarray:
    import matplotlib.image

    return (matplotlib.image.imread(png)[..., :3] * 255).round().astype(int)


def _near(pixels: np.ndarray, hex_colour: str, tol: int = 40) -> int:
    """Pixels within `tol` of a colour (the viewer shades its cartoon, so not exact)."""
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels - rgb).max(axis=-1) <= tol).sum())


@pytest.mark.timeout(120)
def test_report_loads_in_headless_chromium_without_console_errors(workdir: Path, tmp_path: Path) -> None:
    viewer = report.find_viewer()
    assert viewer is not None, "node_modules/3dmol is missing: run `npm ci` (make test does)"
    page = report.write_report(workdir, "demo", comment=COMMENT, viewer=viewer)
    shot = tmp_path / "report.png"
    result = _browse(page, tmp_path / "profile", f"--screenshot={shot}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert not _console_errors(result.stderr), _console_errors(result.stderr)
    w, h = _png_size(shot)
    assert (w, h) == (1000, 1400)
    pixels = _pixels(shot)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # not a blank page
    # The structure is drawn: the viewer's box (600 x 480 CSS px below the legend, at device scale 1, measured on
    # this page's layout) holds the test model's two pLDDT bands.
    box = pixels[470:940, 26:624]
    assert _near(box, "#0053d6") > 200 and _near(box, "#ff7d45") > 200
    # The viewer's script ran to its end and built a WebGL canvas (or said plainly that WebGL is unavailable).
    dom = _browse(page, tmp_path / "profile2", "--dump-dom").stdout
    assert 'data-viewer="3dmol"' in dom and "<canvas" in dom, dom[-500:]


def test_an_unmeasured_msa_is_estimated_for_the_records_own_msa_mode(workdir: Path) -> None:
    from af2jobs import cost
    from af2jobs.fasta import FastaRecord
    from af2jobs.runconfig import RunConfig

    record = FastaRecord(name=NAME, description="", sequence="A" * L, line=1)
    ctx = _ctx(queue="low")
    ctx.run = RunConfig(strategy="best", msa_mode="mmseqs2")
    report.write_record_report(workdir, record, ctx, {"predict": {"seconds": 30.0}})
    page = (workdir / report.REPORT_NAME).read_text()
    mmseqs = cost.estimate(L, queue="low", msa_mode="mmseqs2")
    jackhmmer = cost.estimate(L, queue="low")["msa_usd"]
    assert mmseqs["msa_usd"] != jackhmmer
    assert f"${mmseqs['msa_usd']:.4f} for" in page and f"${jackhmmer:.4f} for" not in page
    assert f"s on {mmseqs['gpu_instance']} (ESTIMATE" in page  # msa_mode mmseqs2 searches in the GPU job
