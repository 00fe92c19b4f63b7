"""report.html: one record's results in a single self-contained file that works offline.

Read from the record's output directory (the file contract of the predict stage, pipeline.run):
    ranked_0.pdb                         the structure; its B-factor column holds pLDDT
    ranking_debug.json                   the order of the models (the first is ranked_0)
    confidence_<model>_full.json         per-residue pLDDT, predicted_aligned_error (pTM models)
    features.pkl                         the MSA: depth per position
    timings.json, versions.json          timings; the parameters' identity (params_status UNTRAINED or official)
Written beside it: report.html, plddt.png, pae.png (when there is a PAE), msa_depth.png.

The 3D viewer is 3Dmol.js (npm package `3dmol`, package.json), whose minified build is copied INTO the page, so
nothing is fetched from a network when the page opens. Where node_modules/3dmol is absent the page shows a
static SVG projection of the CA trace instead and says so. Every text that comes from a user or a file (job name,
comment, model names, notes) is HTML-escaped; data handed to the script is JSON with '<' escaped, so it cannot
close the script element.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from af2jobs import atomic
from af2jobs.pipeline.features import depth_line

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
PLOTS = ("plddt.png", "pae.png", "msa_depth.png")
VIEWER_ENV = "AF2_VIEWER_JS"  # a path to 3Dmol-min.js, where it is not in the repository's node_modules
_VIEWER_REL = Path("node_modules") / "3dmol" / "build" / "3Dmol-min.js"
# AlphaFold's pLDDT bands (as the AlphaFold database colours them): lower bound, colour, label.
BANDS = ((90.0, "#0053d6", "very high (> 90)"), (70.0, "#65cbf3", "confident (70-90)"),
         (50.0, "#ffdb13", "low (50-70)"), (0.0, "#ff7d45", "very low (< 50)"))
_GAP = 21  # HHBLITS_AA_TO_ID['-'] in the features' msa


def find_viewer() -> Path | None:
    """3Dmol-min.js from AF2_VIEWER_JS, or from node_modules of the working directory or the source checkout."""
    candidates = []
    if os.environ.get(VIEWER_ENV):
        candidates.append(Path(os.environ[VIEWER_ENV]))
    candidates += [Path.cwd() / _VIEWER_REL, Path(__file__).resolve().parents[3] / _VIEWER_REL]
    return next((p for p in candidates if p.is_file()), None)


def band_colour(plddt: float) -> str:
    return next(colour for low, colour, _ in BANDS if plddt >= low)


# ---------------------------------------------------------------------------------------------------------------
# Reading the outputs


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def ca_atoms(pdb: str) -> list[tuple[float, float, float, float]]:
    """(x, y, z, B-factor) of each CA atom, in file order."""
    out = []
    for line in pdb.splitlines():
        if line.startswith("ATOM") and line[12:16].strip() == "CA":
            out.append((float(line[30:38]), float(line[38:46]), float(line[46:54]), float(line[60:66])))
    return out


def msa_depth(workdir: Path) -> list[int]:
    path = workdir / "features.pkl"
    if not path.is_file():
        return []
    with open(path, "rb") as fh:
        feats = pickle.load(fh)
    return (np.asarray(feats["msa"]) != _GAP).sum(axis=0).astype(int).tolist()


def read_outputs(workdir: Path) -> dict[str, Any]:
    ranking = _json(workdir / "ranking_debug.json") or {}
    order = ranking.get("order") or []
    best = order[0] if order else None
    conf = _json(workdir / f"confidence_{best}_full.json") if best else None
    pdb = (workdir / "ranked_0.pdb").read_text() if (workdir / "ranked_0.pdb").is_file() else ""
    plddt = list((conf or {}).get("plddt") or [b for *_, b in ca_atoms(pdb)])
    return {
        "best": best, "order": order, "confidence": conf or {}, "pdb": pdb, "plddt": plddt,
        "pae": (conf or {}).get("predicted_aligned_error"), "msa_depth": msa_depth(workdir),
        "timings": _json(workdir / "timings.json") or {}, "versions": _json(workdir / "versions.json") or {},
        "ranking": ranking, "chains": _json(workdir / "msas" / "chain_id_map.json"),
    }


def ca_chains(pdb: str) -> list[str]:
    """The chain id of each CA atom of a PDB text, in order."""
    return [line[21] for line in pdb.splitlines() if line.startswith("ATOM") and line[12:16].strip() == "CA"]


CONTACT_A = 8.0  # CA-CA distance of two residues in contact across an interface


def interfaces(data: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """A complex's chains (length, mean pLDDT) and each chain pair's mean PAE, interface contacts (CA-CA under
    8 A) and the mean PAE and pLDDT over those contacts."""
    atoms = ca_atoms(data["pdb"])
    chains = ca_chains(data["pdb"])
    if not atoms or len(set(chains)) < 2 or len(chains) != len(atoms):
        return [], []
    xyz = np.asarray([a[:3] for a in atoms], dtype=float)
    plddt = np.asarray(data["plddt"] if len(data["plddt"]) == len(atoms) else [a[3] for a in atoms], dtype=float)
    pae = np.asarray(data["pae"], dtype=float) if data["pae"] else None
    ids = np.asarray(chains)
    names = {c: (data.get("chains") or {}).get(c, {}).get("description", "") for c in dict.fromkeys(chains)}
    chain_rows = [(f"chain {c}", f"{int((ids == c).sum())} residues, mean pLDDT {plddt[ids == c].mean():.1f}"
                   + (f"; {_e(names[c])}" if names[c] else "")) for c in names]
    pair_rows = []
    order = list(names)
    dist = np.linalg.norm(xyz[:, None] - xyz[None, :], axis=-1)
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            ia, ib = np.where(ids == a)[0], np.where(ids == b)[0]
            close = dist[np.ix_(ia, ib)] < CONTACT_A
            text = f"{int(close.sum())} residue pairs within {CONTACT_A:g} A"
            if pae is not None and pae.shape == dist.shape:
                block = pae[np.ix_(ia, ib)]
                text += f"; mean PAE {a}->{b} {block.mean():.1f} A, {b}->{a} {pae[np.ix_(ib, ia)].mean():.1f} A"
                if close.any():
                    text += f"; at the contacts {block[close].mean():.1f} A"
            if close.any():
                touching = np.union1d(ia[close.any(1)], ib[close.any(0)])
                text += f"; interface pLDDT {plddt[touching].mean():.1f}"
            pair_rows.append((f"{a}-{b}", text))
    return chain_rows, pair_rows


# ---------------------------------------------------------------------------------------------------------------
# Plots (matplotlib, no display)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(workdir: Path, data: Mapping[str, Any]) -> dict[str, Path]:
    plt = _figure()
    written: dict[str, Path] = {}
    plddt = data["plddt"]
    if plddt:
        fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
        x = np.arange(1, len(plddt) + 1)
        tops = [100.0] + [low for low, _, _ in BANDS[:-1]]
        for (low, colour, _), top in zip(BANDS, tops):
            ax.axhspan(low, top, color=colour, alpha=0.2, lw=0)
        ax.plot(x, plddt, color="black", lw=1.2)
        ax.set(xlim=(1, len(plddt)), ylim=(0, 100), xlabel="residue", ylabel="pLDDT",
               title=f"per-residue pLDDT ({data['best']})")
        written["plddt.png"] = _save(fig, plt, workdir / "plddt.png")
    if data["pae"]:
        pae = np.asarray(data["pae"], dtype=float)
        fig, ax = plt.subplots(figsize=(5, 4.2), dpi=100)
        im = ax.imshow(pae, cmap="Greens_r", vmin=0, vmax=max(31.75, float(pae.max())))
        fig.colorbar(im, ax=ax, label="expected position error (Å)")
        ax.set(xlabel="scored residue", ylabel="aligned residue", title="predicted aligned error")
        written["pae.png"] = _save(fig, plt, workdir / "pae.png")
    if data["msa_depth"]:
        depth = data["msa_depth"]
        used = ((data["timings"].get("msa_depth") or {}).get("used") or {}).get("rows")
        fig, ax = plt.subplots(figsize=(8, 2.6), dpi=100)
        ax.fill_between(np.arange(1, len(depth) + 1), depth, color="#4c72b0", step="mid",
                        label="unique rows (after de-duplication)")
        if used is not None:  # the model samples its rows: how many, not which, is known per position
            ax.axhline(used, color="#dd8452", linestyle="--", label=f"rows the model read: {used}")
            ax.legend(loc="upper right", fontsize=7)
        ax.set(xlim=(1, len(depth)), ylim=(0, max(max(depth), used or 0) * 1.05 + 1), xlabel="residue",
               ylabel="sequences", title="MSA depth (non-gap rows per position)")
        written["msa_depth.png"] = _save(fig, plt, workdir / "msa_depth.png")
    return written


def _save(fig, plt, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------------
# The page


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _script_json(value: Any) -> str:
    # Inside <script>, "</script>" or "<!--" in the data would end or confuse the element: escape every '<'.
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _inline_js(text: str) -> str:
    return text.replace("</script", "<\\/script")


def svg_trace(atoms: list[tuple[float, float, float, float]], size: int = 480) -> str:
    """A static picture of the CA trace: the x-y projection on the two main axes, segments coloured by pLDDT."""
    if len(atoms) < 2:
        return "<p>No CA atoms to draw.</p>"
    xyz = np.asarray([a[:3] for a in atoms], dtype=float)
    xyz -= xyz.mean(axis=0)
    _, _, vt = np.linalg.svd(xyz, full_matrices=False)
    xy = xyz @ vt[:2].T
    span = float(np.ptp(xy, axis=0).max()) or 1.0
    pts = (xy - xy.min(axis=0)) / span * (size - 40) + 20
    segs = "".join(
        f'<line x1="{pts[i, 0]:.1f}" y1="{pts[i, 1]:.1f}" x2="{pts[i + 1, 0]:.1f}" y2="{pts[i + 1, 1]:.1f}" '
        f'stroke="{band_colour(atoms[i][3])}" stroke-width="4" stroke-linecap="round"/>'
        for i in range(len(atoms) - 1)
    )
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
            f'viewBox="0 0 {size} {size}" role="img" aria-label="CA trace coloured by pLDDT">{segs}</svg>')


def _img(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"><figcaption>{_e(path.name)}</figcaption></figure>'


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _timing_rows(timings: Mapping[str, Any]) -> list[tuple[str, Any]]:
    rows = []
    for stage, value in timings.items():
        if isinstance(value, (int, float)):
            rows.append((stage, f"{value:.2f} s"))
        elif isinstance(value, Mapping):
            secs = value.get("seconds", value.get("search_s"))
            if isinstance(secs, (int, float)):
                rows.append((stage, f"{secs:.2f} s"))
    return rows


_PHASE_NAMES = {"cpu": "CPU phase (MSA, features)", "gpu": "GPU phase (prediction, outputs)"}


def _phase_rows(cost: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """af2jobs.cost.record_cost's shape: per phase, measured seconds priced, or the estimate labelled as one."""
    rows = []
    for key, phase in cost["phases"].items():
        share = f"{phase['gpus']} GPU(s) of " if "gpus" in phase else ""
        text = f"${phase['usd']:.4f} for {phase['seconds']:.1f} s on {share}{phase['instance']}"
        rows.append((_PHASE_NAMES.get(key, key), text + ("" if phase["measured"] else " (ESTIMATE: not measured)")))
    every = all(p["measured"] for p in cost["phases"].values())
    rows.append(("total", f"${cost['total_usd']:.4f}" + ("" if every else " (partly or wholly an ESTIMATE)")))
    rows.append(("basis", "this record's stages as timings.json measured them, priced on the instances of queue "
                          f"{cost.get('queue', '?')}; instance start-up and idle time are not included, the job "
                          "record's cost has the whole job"))
    rows.append(("prices", f"{cost.get('region', '')} on-demand list prices as of {cost.get('prices_as_of', '?')}"))
    return rows


def _cost_rows(cost: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    if not cost:
        return [("cost", "not known when this report was written")]
    if isinstance(cost.get("phases"), Mapping):
        return _phase_rows(cost)
    usd = cost.get("usd", cost)
    if "total_usd" not in usd:
        return [(k, v) for k, v in cost.items() if isinstance(v, (int, float, str))]
    return [("total", f"${usd['total_usd']:.4f}"),
            ("CPU phase", f"${usd['cpu_usd']:.4f} on {usd.get('cpu_instance', '?')}"),
            ("GPU phase", f"${usd['gpu_usd']:.4f} on {usd.get('gpu_instance', '?')}"),
            ("prices", f"{usd.get('region', '')} on-demand list prices as of {usd.get('prices_as_of', '?')}")]


def _templates_html(templates: Mapping[str, Any] | None, ranking: Mapping[str, Any], complex_: bool = False) -> str:
    if not templates:
        return ("<p id=\"templates\">No template database was installed: the models ran without templates.</p>"
                if complex_ else
                "<p id=\"templates\">No template database was installed: models 1 and 2 ran without templates.</p>")
    used = templates.get("used") or []
    models = ", ".join((ranking.get("templates") or {}).get("by_models") or []) or "none of the models run"
    search = ("hmmsearch of each chain's MSA against pdb_seqres" if complex_ else
              "HHsearch of the MSA against pdb70")
    head = (f'<p id="templates">{search}: {templates.get("hits", 0)} hit(s); '
            f'{len(used)} used (released on or before {_e(templates.get("max_template_date", "?"))}), by '
            f"{_e(models)}.</p>")
    rows = [(f"{t['pdb_id']}_{t['chain']}" + (f" (for chain {t['query_chain']})" if t.get("query_chain") else ""),
             f"released {t.get('release_date')}, sum_probs {t.get('sum_probs')}, "
             f"{t.get('aligned_cols')} aligned columns") for t in used]
    return head + (_table(rows) if rows else "")


def _relax_html(relax: Mapping[str, Any]) -> str:
    if not relax:
        return "<p id=\"relax\">No model was relaxed (models_to_relax none).</p>"
    rows = []
    for model, r in relax.items():
        if r.get("error"):
            rows.append((model, f"FAILED, the structure is unrelaxed: {r['error']}"))
        else:
            moved = f"; moved {r['rmsd']:.2f} A (heavy atoms)" if r.get("rmsd") is not None else ""
            warning = f" WARNING: {r['warning']}" if r.get("warning") else ""
            rows.append((model, f"residues with violations {r['violations_before']} before, "
                                f"{r['violations_after']} after{moved}; {r['seconds']:.1f} s on OpenMM "
                                f"{r['platform']}{warning}"))
    return '<div id="relax">' + _table(rows) + "</div>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:1100px}
.banner{background:#b00020;color:#fff;padding:.8rem 1rem;font-weight:bold;border-radius:4px}
.note{background:#fff4d6;padding:.6rem 1rem;border-left:4px solid #e0a800}
#viewer{width:600px;height:480px;position:relative;border:1px solid #ccc}
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}
figure{display:inline-block;margin:.5rem}img{max-width:100%}
.legend span{display:inline-block;padding:.1rem .5rem;margin-right:.3rem;border-radius:3px}
"""

_VIEWER_SCRIPT = """
(function () {
  var pdb = %(pdb)s, bands = %(bands)s;
  function colour(b) { for (var i = 0; i < bands.length; i++) { if (b >= bands[i][0]) return bands[i][1]; } return bands[bands.length - 1][1]; }
  var el = document.getElementById("viewer");
  var viewer = $3Dmol.createViewer(el, {backgroundColor: "white"});
  if (!viewer) {
    el.textContent = "This browser could not start WebGL; the 3D view is not available (the plots below are).";
    document.body.setAttribute("data-viewer", "no-webgl");
    return;
  }
  viewer.addModel(pdb, "pdb");
  viewer.setStyle({}, {cartoon: {colorfunc: function (atom) { return colour(atom.b); }}});
  viewer.zoomTo();
  viewer.render();
  document.body.setAttribute("data-viewer", "3dmol");
})();
"""


def render_html(name: str, data: Mapping[str, Any], plots: Mapping[str, Path], *, comment: str = "",
                cost: Mapping[str, Any] | None = None, viewer_js: str | None = None) -> str:
    versions = data["versions"]
    untrained = versions.get("params_status") == "UNTRAINED" or bool(data["confidence"].get("untrained"))
    plddt = data["plddt"]
    mean = float(np.mean(plddt)) if plddt else None
    conf = data["confidence"]
    parts = [f"<h1>{_e(name)}</h1>"]
    if untrained:
        parts.append('<p class="banner" id="untrained">UNTRAINED PARAMETERS: this structure was predicted with '
                     "random weights of the official AlphaFold2 shapes, not the published weights. It and its "
                     "confidence scores carry no biological meaning.</p>")
    if comment:
        parts.append(f'<p id="comment">Comment: {_e(comment)}</p>')
    parts.append(_table([
        ("best model", data["best"] or "-"),
        ("mean pLDDT", f"{mean:.2f}" if mean is not None else "-"),
        ("pTM", conf.get("ptm", "-")),
        *([("ipTM", conf["iptm"]), ("ranking 0.8 ipTM + 0.2 pTM", conf.get("ranking_confidence", "-"))]
          if "iptm" in conf else []),
        ("residues", len(plddt)),
        ("models ranked", ", ".join(data["order"]) or "-"),
    ]))
    legend = "".join(f'<span style="background:{c}">{_e(label)}</span>' for _, c, label in BANDS)
    parts.append(f'<h2>Structure (ranked_0, coloured by pLDDT)</h2><p class="legend">{legend}</p>')
    atoms = ca_atoms(data["pdb"])
    if viewer_js is not None and data["pdb"]:
        parts.append('<div id="viewer"></div>')
    else:
        parts.append('<p class="note" id="no-viewer">The 3D viewer (3Dmol.js from node_modules/3dmol) was not '
                     "available when this report was written: below is a static projection of the CA trace "
                     "onto its two main axes.</p>" + svg_trace(atoms))
    parts.append("<h2>Confidence</h2>" + _img(plots.get("plddt.png"), "per-residue pLDDT")
                 + _img(plots.get("pae.png"), "predicted aligned error"))
    chain_rows, pair_rows = interfaces(data)
    if chain_rows:
        parts.append('<h2>Chains and interfaces</h2><div id="interfaces">' + _table(chain_rows)
                     + _table(pair_rows) + "</div>")
    depth = (data["timings"] or {}).get("msa_depth")
    line = f'<p id="msa-depth">MSA rows: {_e(depth_line(depth))}.</p>' if depth else ""
    if versions.get("msa_engine"):
        line += f'<p id="msa-engine">Searched with {_e(versions["msa_engine"])}.</p>'
    parts.append("<h2>MSA depth</h2>" + line + (_img(plots.get("msa_depth.png"), "MSA depth per position")
                                                or "<p>No MSA features found.</p>"))
    parts.append("<h2>Templates</h2>" + _templates_html(versions.get("templates"), data.get("ranking") or {},
                                                                   bool(data.get("chains"))))
    parts.append("<h2>Amber relaxation</h2>" + _relax_html((data.get("ranking") or {}).get("relax") or {}))
    parts.append("<h2>Timings</h2>" + _table(_timing_rows(data["timings"])))
    parts.append("<h2>Cost</h2>" + _table(_cost_rows(cost)))
    params = versions.get("params") or {}
    rows = [("status", versions.get("params_status", "-")), ("af2jobs", versions.get("af2jobs", "-")),
            ("alphafold", versions.get("alphafold", "-")), ("device", versions.get("device", "-"))]
    rows += [(model, f"{p.get('source', '?')} {p.get('release', '')} sha256 {str(p.get('sha256', ''))[:16]}")
             for model, p in params.items() if isinstance(p, Mapping)]
    parts.append("<h2>Parameters and versions</h2>" + _table(rows))
    notes = versions.get("notes") or ([versions["note"]] if versions.get("note") else [])
    if notes:
        parts.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    scripts = ""
    if viewer_js is not None and data["pdb"]:
        code = _VIEWER_SCRIPT % {"pdb": _script_json(data["pdb"]),
                                 "bands": _script_json([[low, c] for low, c, _ in BANDS])}
        scripts = f"<script>{_inline_js(viewer_js)}</script><script>{code}</script>"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(name)}: af2jobs report</title><style>{_CSS}</style></head>"
            f"<body>{''.join(parts)}{scripts}</body></html>\n")


def write_report(workdir: Path, name: str, *, comment: str = "", cost: Mapping[str, Any] | None = None,
                 viewer: Path | None | bool = True) -> Path:
    """Write report.html and its PNG plots into `workdir`; returns the report's path.

    viewer: True finds 3Dmol-min.js (find_viewer), a Path uses that file, False or None draws the SVG fallback.
    """
    data = read_outputs(workdir)
    plots = write_plots(workdir, data)
    path = find_viewer() if viewer is True else (viewer or None)
    js = path.read_text(encoding="utf-8") if path is not None else None
    page = render_html(name, data, plots, comment=comment, cost=cost, viewer_js=js)
    out = workdir / REPORT_NAME
    atomic.write_text(out, page)
    return out


def write_record_report(workdir: Path, record: Any, ctx: Any, timings: Mapping[str, Any]) -> None:
    """report.html of a predicted record (a FastaRecord), with the job's comment and the record's cost: its measured
    stages priced (af2jobs.cost.record_cost) on the queue and GPU count of the pipeline's Context `ctx`. The report
    is a view of files already written: a failure to draw it is logged, and must not turn a finished prediction
    into a failed one."""
    from af2jobs import cost

    try:
        length = len(record.sequence)
        priced = cost.record_cost(timings, length=length, queue=ctx.queue or cost.auto_queue(length), gpus=ctx.gpus,
                                  strategy=ctx.run.strategy, models=len(ctx.run.model_names),
                                  msa_mode=ctx.run.msa_mode, db_preset=ctx.run.db_preset)
        write_report(workdir, record.name, comment=ctx.comment, cost=priced)
    except Exception:
        log.exception("%s: report.html could not be written", record.name)


__all__ = ["write_record_report", "write_report", "render_html", "read_outputs", "write_plots", "find_viewer", "svg_trace", "REPORT_NAME"]
