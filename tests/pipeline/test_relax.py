"""Amber relaxation (AlphaFold's relax module on OpenMM's CPU platform) of a real structure: 1UBQ from the demo's
pdb_mmcif, its waters removed, with clashes put in on purpose."""

from __future__ import annotations

import dataclasses
import gemmi
import numpy as np
import pytest
from alphafold.common import protein

from af2jobs.pipeline import relax

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def ubiquitin(demo_db_root) -> protein.Protein:
    st = gemmi.read_structure(str(demo_db_root / "pdb_mmcif" / "mmcif_files" / "1ubq.cif"))
    st.remove_ligands_and_waters()
    st.setup_entities()
    prot = protein.from_pdb_string(st.make_pdb_string())
    # pLDDT in the B-factor column, as a prediction has it (relax carries it over).
    return dataclasses.replace(prot, b_factors=np.full_like(prot.b_factors, 90.0))


def _clash(prot: protein.Protein) -> protein.Protein:
    """Residue 40's side chain pushed into residue 41's (an overlap the minimiser must resolve)."""
    pos = prot.atom_positions.copy()
    shift = pos[40, 1] - pos[39, 1]
    pos[39, 4:] += 0.8 * shift * (prot.atom_mask[39, 4:, None] > 0)
    return dataclasses.replace(prot, atom_positions=pos)


def test_a_real_structure_relaxes_with_lower_energy_and_no_violation(ubiquitin):
    done = relax.relax_one("1ubq", _clash(ubiquitin), use_gpu=False)
    assert done.error is None and done.platform == "CPU"
    assert done.violations_before >= 1 and done.violations_after == 0
    assert done.energy_after < done.energy_before
    assert 0 < done.rmsd < 2.0  # restrained to where it was: the clash moves, the fold does not
    relaxed = protein.from_pdb_string(done.pdb)
    assert relaxed.aatype.tolist() == ubiquitin.aatype.tolist()
    assert np.allclose(relaxed.b_factors[:, 1], 90.0)
    assert "H" in {line[76:78].strip() for line in done.pdb.splitlines() if line.startswith("ATOM")}


def test_what_cannot_be_relaxed_is_reported_not_raised(ubiquitin):
    unknown = dataclasses.replace(ubiquitin, aatype=np.full_like(ubiquitin.aatype, 20))  # every residue UNK
    done = relax.relax_one("unk", unknown, use_gpu=False)
    assert done.pdb is None and done.error


def test_relax_none_asks_nothing_of_openmm(monkeypatch):
    from af2jobs.pipeline.results import Prediction

    def no_openmm():
        raise ModuleNotFoundError("No module named 'openmm'")

    monkeypatch.setattr(relax, "cuda_available", no_openmm)  # a GPU image that leaves OpenMM out
    monkeypatch.setattr(relax.jax, "default_backend", lambda: "gpu")
    prediction = Prediction(ranked=[], runs=[], features={}, strategy="best", config_fingerprint="")
    assert relax.relax_prediction(prediction, "none", {}) == {}


def test_the_reported_movement_is_the_measured_heavy_atom_rmsd(ubiquitin):
    """Measured on the structures themselves (gemmi's atoms, matched by residue and name): AlphaFold's minimiser
    reports only its last round's movement."""
    clashed = _clash(ubiquitin)
    done = relax.relax_one("1ubq", clashed, use_gpu=False)
    before = gemmi.read_pdb_string(protein.to_pdb(clashed))
    after = gemmi.read_pdb_string(done.pdb)
    moved = []
    for res_b, res_a in zip(before[0][0], after[0][0]):
        atoms = {a.name: a.pos for a in res_a if a.element.name != "H"}
        moved += [a.pos.dist(atoms[a.name]) ** 2 for a in res_b if a.name in atoms]
    assert done.rmsd == pytest.approx(float(np.sqrt(np.mean(moved))), abs=1e-3)
    assert 0 < done.ca_rmsd and done.warning is None


def test_a_model_that_relaxation_moved_far_is_flagged(ubiquitin):
    shifted = protein.from_pdb_string(relax.relax_one("1ubq", ubiquitin, use_gpu=False).pdb)
    pos = shifted.atom_positions.copy()
    pos[:38] += np.array([4.0, 0.0, 0.0]) * (shifted.atom_mask[:38, :, None] > 0)  # half the chain, 4 A away
    heavy, ca = relax.moved(dataclasses.replace(shifted, atom_positions=pos), protein.to_pdb(shifted))
    assert heavy == pytest.approx(4.0 * np.sqrt(shifted.atom_mask[:38].sum() / shifted.atom_mask.sum()), abs=1e-3)
    assert ca == pytest.approx(4.0 * np.sqrt(38 / len(shifted.aatype)), abs=1e-3)
    assert "moved m by" in relax.moved_far("m", heavy, ca) and relax.moved_far("m", 0.4, 0.2) is None
