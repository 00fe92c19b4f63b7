"""RunConfig: the one run configuration, and the strategy spelling shared with JobRequest."""

import pytest
from pydantic import ValidationError

from af2jobs.request import JobRequest
from af2jobs.runconfig import RunConfig, canonical_strategy, parse_strategy


@pytest.mark.parametrize("text", ["best", "all", "stop-at-score:80", "stop-at-score:0.00001", "stop-at-score:100"])
def test_every_strategy_a_request_stores_is_accepted_by_the_run_config(text):
    request = JobRequest(fasta="x", sequence="MQIFVKTLTGKTITLEVEPSDT", strategy=text)
    assert RunConfig(strategy=request.strategy).strategy == canonical_strategy(text)


@pytest.mark.parametrize("text", ["worst", "stop-at-score:0", "stop-at-score:101", "stop-at-score:nan",
                                  "stop-at-score:", "stop-at-score:x"])
def test_bad_strategies_are_refused_by_both(text):
    with pytest.raises(ValueError):
        parse_strategy(text)
    with pytest.raises(ValidationError):
        JobRequest(fasta="x", sequence="MQIFVKTLTGKTITLEVEPSDT", strategy=text)


def test_model_names_are_checked():
    assert RunConfig(model_names="model_1, model_3").model_names == ("model_1", "model_3")
    with pytest.raises(ValidationError, match="unknown model"):
        RunConfig(model_names="model_6")
    with pytest.raises(ValidationError, match="named twice"):
        RunConfig(model_names="model_1,model_1")


@pytest.mark.parametrize(("depth", "caps", "fitted"), [
    (1, (512, 5120), (64, 1)),  # the query alone
    (60, (512, 5120), (64, 1)),  # every row a cluster centre, also in the template models (4 rows fewer)
    (61, (512, 5120), (256, 1)),
    (300, (512, 5120), (512, 1)),  # no step between 256 and the cap: the cap, its extra MSA emptied
    (600, (512, 5120), (512, 256)),  # 92 rows left over for the extra MSA in models 1-2
    (508 + 1025, (512, 5120), (512, 5120)),  # more left over than the largest step: the cap
    (10_000, (512, 5120), (512, 5120)),
    (30, (16, 32), (16, 32)),  # a step is never above its cap
    (10, (16, 32), (16, 1)),
])
def test_msa_caps_fit_a_shallow_msa_without_dropping_a_row(depth, caps, fitted):
    from af2jobs.runconfig import fit_msa_caps

    assert fit_msa_caps(depth, *caps) == fitted
    clusters, extra = fitted
    # Every row is still taken: as a centre (the template models give up 4 cluster rows) or into the extra MSA.
    assert min(depth, clusters - 4) + min(max(depth - clusters + 4, 0), extra) == depth or fitted == caps


def test_a_run_fitted_to_its_msa_keeps_everything_else_and_can_be_switched_off():
    run = RunConfig(strategy="best", max_msa_clusters=512, max_extra_msa=5120)
    fitted = run.fitted_to(40)
    assert (fitted.max_msa_clusters, fitted.max_extra_msa) == (64, 1)
    assert fitted.model_dump(exclude={"max_msa_clusters", "max_extra_msa"}) == \
        run.model_dump(exclude={"max_msa_clusters", "max_extra_msa"})
    assert run.fitted_to(10_000) is run
    off = RunConfig(fit_msa_to_depth=False)
    assert off.fitted_to(40) is off
