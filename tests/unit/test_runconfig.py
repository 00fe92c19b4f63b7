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
