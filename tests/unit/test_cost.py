"""Per-job cost from measured seconds, and the estimate before submission (af2jobs.cost)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from af2jobs import cost
from af2jobs.cli import main as cli_main
from af2jobs.request import JobRequest

ROOT = Path(__file__).resolve().parents[2]


def _performance_rows() -> list[tuple[int, float, float]]:
    """(length, best GPU-s, best full run s) from docs/performance.md's GPU table."""
    rows = []
    for line in (ROOT / "docs" / "performance.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 11 and re.fullmatch(r"\d+", cells[0]):
            rows.append((int(cells[0]), float(cells[4]), float(cells[7])))
    return rows


def test_the_estimate_fits_every_measured_row_of_the_performance_table() -> None:
    rows = _performance_rows()
    assert len(rows) >= 9
    for length, best_s, full_s in rows:
        # The H200 has relative speed 1: an instance priced at speed 1 reproduces the table within the fit's error.
        assert cost._poly(cost.BEST_GPU_S, length) == pytest.approx(best_s, rel=0.11), length
        assert cost._poly(cost.FULL_RUN_S, length) == pytest.approx(full_s, rel=0.25, abs=0.2), length


def test_measured_cost_prices_each_phase_on_its_instance_share() -> None:
    measured = {"validating_s": 10.0, "msa_s": 3590.0, "predict_s": 3000.0, "publish_s": 600.0}
    c = cost.job_cost(measured, queue="high", gpus=2)
    # One hour on 8 of the m6i.2xlarge's 8 vCPUs; one hour on 2 of the p4d's 8 GPUs.
    assert c["cpu_usd"] == pytest.approx(cost.PRICES["m6i.2xlarge"].usd_per_hour)
    assert c["gpu_usd"] == pytest.approx(cost.PRICES["p4d.24xlarge"].usd_per_hour * 2 / 8)
    assert c["total_usd"] == pytest.approx(c["cpu_usd"] + c["gpu_usd"])
    assert c["prices_as_of"] == cost.PRICES_AS_OF and "check" in c["prices_source"]


def test_the_price_table_covers_every_queue_and_carries_its_date() -> None:
    assert re.fullmatch(r"\d{4}-\d{2}", cost.PRICES_AS_OF)
    for queue in ("low", "mid", "high", "p4"):
        assert cost.PRICES[cost.gpu_instance_for(queue)].gpus >= 1
    assert cost.PRICES[cost.MSA_INSTANCE].gpus == 0
    with pytest.raises(KeyError):
        cost.gpu_instance_for("auto")


def test_estimates_grow_with_length_and_with_strategy_all() -> None:
    short, long = (cost.estimate(n, queue="mid") for n in (100, 1000))
    assert 0 < short["total_usd"] < long["total_usd"] and short["gpu_s"] < long["gpu_s"]
    assert cost.estimate(500, queue="mid", strategy="all")["gpu_s"] > cost.estimate(500, queue="mid")["gpu_s"]


def test_request_estimate_uses_the_auto_queue_of_the_longest_record() -> None:
    request = JobRequest.parse({"fasta": "two", "sequence": ">a\n" + "A" * 300 + "\n>b\n" + "G" * 700 + "\n"})
    est = cost.estimate_request(request, [300, 700])
    assert est["queue"] == "mid" and est["records"] == 2
    assert est["gpu_s"] == pytest.approx(sum(cost.estimate(n, queue="mid", strategy="all")["gpu_s"] for n in (300, 700)), abs=0.2)


def test_cli_submit_estimate_prints_json_without_an_api(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("AF2_API_URL", raising=False)
    fasta = tmp_path / "p.fasta"
    fasta.write_text(">p\n" + "MKTAYIAKQRQISFVKSHFSRQ" * 10 + "\n")
    assert cli_main.main(["submit", str(fasta), "--estimate", "--strategy", "best"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["length"] == 220 and est["queue"] == "low" and est["total_usd"] > 0


def test_each_price_check_names_a_priced_instance_and_its_source() -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", cost.PRICES_CHECKED)
    for name, source in cost.PRICE_CHECKS.items():
        assert name in cost.PRICES and source.startswith("https://"), name
    assert cost.PRICES_CHECKED in cost.PRICES_SOURCE and "unconfirmed" in cost.PRICES_SOURCE


def test_the_msa_estimate_follows_msa_mode_and_db_preset_and_says_it_is_extrapolated() -> None:
    jack = cost.estimate(300, queue="low", msa_mode="jackhmmer", db_preset="full_dbs")
    mm = cost.estimate(300, queue="low", msa_mode="mmseqs2")
    reduced = cost.estimate(300, queue="low", db_preset="reduced_dbs")
    assert set(jack["msa_search_s"]) == {"jackhmmer:uniref90", "jackhmmer:mgnify", "hhblits:bfd", "hhblits:uniref30"}
    assert set(mm["msa_search_s"]) == {"mmseqs2:uniref90", "mmseqs2:mgnify"}
    assert "jackhmmer:small_bfd" in reduced["msa_search_s"] and "hhblits:bfd" not in reduced["msa_search_s"]
    for est in (jack, mm, reduced):
        assert est["msa_s"] == pytest.approx(sum(est["msa_search_s"].values()), abs=0.5)
        assert "EXTRAPOLATED" in est["basis"] and "synthetic" in est["basis"]
    # The same GPU seconds of prediction; the MSA phase is where msa_mode says: jackhmmer on the MSA job's CPUs,
    # mmseqs2 in the GPU job (no CPU MSA job), on the GPU job's vCPUs, priced on its GPU instance.
    assert mm["gpu_s"] == jack["gpu_s"] and mm["msa_s"] != jack["msa_s"]
    assert jack["cpu_usd"] == pytest.approx(cost.cpu_usd(jack["msa_s"]), abs=1e-4) == jack["msa_usd"]
    assert mm["cpu_usd"] == 0 and mm["msa_instance"] == mm["gpu_instance"] and "GPU job" in mm["basis"]
    assert mm["msa_usd"] == pytest.approx(cost.gpu_usd(mm["msa_s"], instance_type=mm["gpu_instance"]), abs=1e-4)
    assert mm["total_usd"] == pytest.approx(
        cost.gpu_usd(mm["gpu_s"] + mm["msa_s"], instance_type=mm["gpu_instance"]), abs=2e-4)


def test_the_msa_estimate_scales_each_rate_by_its_real_database_size() -> None:
    (size, unit), rate = cost.REAL_DATABASES["uniref90"], cost.MSA_RATES["mmseqs2"]
    parts = cost.msa_seconds(cost.MSA_RATES_QUERY_LENGTH, msa_mode="mmseqs2", vcpus=cost.MSA_RATES_CPUS)
    assert unit == rate.unit == "residues"
    assert parts["mmseqs2:uniref90"] == pytest.approx(rate.seconds_per_million * size / 1e6)
    doubled = cost.msa_seconds(2 * cost.MSA_RATES_QUERY_LENGTH, msa_mode="mmseqs2", vcpus=cost.MSA_RATES_CPUS)
    assert doubled["mmseqs2:uniref90"] == pytest.approx(2 * parts["mmseqs2:uniref90"])
    with pytest.raises(KeyError):
        cost.msa_seconds(100, msa_mode="nope")


def test_the_request_estimate_uses_the_requests_msa_mode() -> None:
    body = {"fasta": "one", "sequence": ">a\n" + "A" * 300 + "\n"}
    jack = cost.estimate_request(JobRequest.parse(body), [300])
    mm = cost.estimate_request(JobRequest.parse({**body, "msa_mode": "mmseqs2"}), [300])
    assert (jack["msa_mode"], mm["msa_mode"]) == ("jackhmmer", "mmseqs2")
    assert mm["msa_s"] == pytest.approx(cost.estimate(300, queue=mm["queue"], msa_mode="mmseqs2")["msa_s"], abs=0.1)
