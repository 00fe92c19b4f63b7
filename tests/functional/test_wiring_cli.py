"""wiring.build for the local mode, `af2 keys` and `af2 serve`'s start-up checks (no model runs here)."""

from __future__ import annotations

import socket

import pytest

from af2jobs import errors, wiring
from af2jobs.adapters.local.files import DirectoryArtifactStore
from af2jobs.adapters.local.notify import LocalNotifier
from af2jobs.adapters.local.sqlite import SqliteApiKeyStore, SqliteJobRepository
from af2jobs.adapters.local.worker import LocalOrchestrator, Worker
from af2jobs.cli.main import main
from af2jobs.models import JobState, Principal
from af2jobs.request import JobRequest
from af2jobs.settings import Settings
from tests.conftest import UBIQUITIN


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    monkeypatch.setenv("AF2_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("AF2_MODE", raising=False)
    return tmp_path / "data"


def test_local_mode_builds_local_adapters_around_one_worker(tmp_path):
    services = wiring.build(Settings(data_dir=tmp_path, cpu_workers=0, gpus="0,1"))
    try:
        assert isinstance(services.repo, SqliteJobRepository) and isinstance(services.keys, SqliteApiKeyStore)
        assert isinstance(services.store, DirectoryArtifactStore) and services.store.root == tmp_path / "artifacts"
        assert isinstance(services.notifier, LocalNotifier) and services.notifier.store is services.store
        # the mail's links go through this server's key-less route, signed with the data directory's secret
        assert services.notifier.links is services.links and services.links.base_url == "http://127.0.0.1:8080"
        assert isinstance(services.worker, Worker) and services.worker.slots == ["0", "1"]
        assert isinstance(services.orchestrator, LocalOrchestrator) and services.orchestrator.worker is services.worker
        # The service is wired to them: a submitted job is stored, and waits (the worker was not started).
        job = services.service.submit(Principal("ann"), JobRequest(fasta="ubq", sequence=UBIQUITIN))
        assert services.repo.get(job.id).state is JobState.QUEUED
        assert services.keys.verify(services.keys.create("ann")) == Principal("ann")
    finally:
        services.close()


def test_aws_mode_without_its_names_fails_at_start_up(tmp_path):
    with pytest.raises(errors.ConfigurationError, match="AF2_JOBS_TABLE.*AF2_TOPIC_ARN"):
        wiring.build(Settings(data_dir=tmp_path, mode="aws"))


def test_keys_create_list_and_revoke(data_env, capsys):
    assert main(["keys", "create", "--owner", "alice", "--admin"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("af2_") and "cannot be shown again" in err and key not in err
    key_id = key.split("_")[1]
    store = wiring.key_store(Settings())
    assert store.verify(key) == Principal("alice", admin=True)

    assert main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and "alice" in listing and "yes" in listing
    assert key.split("_", 2)[2] not in listing  # never the secret

    assert main(["keys", "revoke", key_id]) == 0
    assert store.verify(key) is None
    assert main(["keys", "revoke", "0123456789abcdef"]) == 1
    assert "no API key 0123456789abcdef" in capsys.readouterr().err


def test_keys_create_with_an_email_keeps_it_and_a_bad_one_is_refused(data_env, capsys):
    assert main(["keys", "create", "--owner", "ann", "--email", "ann@lab.example.org"]) == 0
    out, err = capsys.readouterr()
    assert "ann@lab.example.org" in err
    [info] = wiring.key_store(Settings()).list()
    assert info.email == "ann@lab.example.org"
    assert main(["keys", "list"]) == 0 and "ann@lab.example.org" in capsys.readouterr().out
    assert main(["keys", "create", "--owner", "bob", "--email", "bob-at-lab"]) == 2
    assert "email must be an address" in capsys.readouterr().err
    assert [i.owner for i in wiring.key_store(Settings()).list()] == ["ann"]  # nothing half-made


def test_on_aws_keys_create_and_revoke_route_the_owners_mail_through_a_filtered_subscription(
        tmp_path, monkeypatch, capsys):
    import json

    from af2jobs.adapters.aws import DynamoApiKeyStore
    from tests.functional import moto_support

    with moto_support.moto_aws(monkeypatch):
        sns, dynamodb = moto_support.client("sns"), moto_support.client("dynamodb")
        topic = sns.create_topic(Name="af2")["TopicArn"]
        dynamodb.create_table(**DynamoApiKeyStore.table_definition("keys"))
        for name, value in {"MODE": "aws", "JOBS_TABLE": "jobs", "KEYS_TABLE": "keys", "BUCKET": "b",
                            "TOPIC_ARN": topic, "STATE_MACHINE_ARN": "arn:aws:states:us-east-1:1:stateMachine:m",
                            "DATA_DIR": str(tmp_path)}.items():
            monkeypatch.setenv(f"AF2_{name}", value)
        assert main(["keys", "create", "--owner", "ann", "--email", "ann@lab.example.org"]) == 0
        assert "asking to confirm" in capsys.readouterr().err
        assert main(["keys", "create", "--owner", "ann-lab", "--email", "ann@lab.example.org"]) == 0
        key = capsys.readouterr().out.strip()

        def policy() -> dict | None:
            subs = [s for s in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
                    if s["Endpoint"] == "ann@lab.example.org"]
            if not subs:
                return None
            arn = subs[0]["SubscriptionArn"]
            return json.loads(sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"]["FilterPolicy"])

        assert policy() == {"owner": ["ann", "ann-lab"]}
        assert main(["keys", "revoke", key.split("_")[1]]) == 0
        assert policy() == {"owner": ["ann"]}  # ann-lab's mail no longer goes there


def test_the_local_link_secret_is_made_once_private_and_kept(tmp_path):
    first = wiring.link_signer(Settings(data_dir=tmp_path, port=8123))
    again = wiring.link_signer(Settings(data_dir=tmp_path))
    assert first.secret == again.secret and len(first.secret) == 32
    assert first.base_url == "http://127.0.0.1:8123"
    assert (tmp_path / "link.secret").stat().st_mode & 0o777 == 0o600
    assert wiring.link_signer(Settings(data_dir=tmp_path / "other")).secret != first.secret


def test_on_aws_the_link_secret_comes_from_secrets_manager_and_is_optional(tmp_path, monkeypatch):
    from tests.functional import moto_support

    names = {"jobs_table": "jobs", "keys_table": "keys", "bucket": "b", "topic_arn": "arn:aws:sns:us-east-1:1:t",
             "state_machine_arn": "arn:aws:states:us-east-1:1:stateMachine:m"}
    with moto_support.moto_aws(monkeypatch):
        arn = moto_support.client("secretsmanager").create_secret(Name="links", SecretString="s" * 40)["ARN"]
        assert wiring.link_signer(Settings(data_dir=tmp_path, mode="aws", **names)) is None  # presigned URLs then
        signer = wiring.link_signer(Settings(data_dir=tmp_path, mode="aws", link_secret_arn=arn,
                                             api_url="https://x.execute-api.us-east-1.amazonaws.com/v1", **names))
        assert signer.secret == b"s" * 40 and signer.base_url.endswith("/v1")
        checker = wiring.link_signer(Settings(data_dir=tmp_path, mode="aws", link_secret_arn=arn, **names))
        assert checker.secret == b"s" * 40  # the API checks links without knowing its own URL
        with pytest.raises(errors.ConfigurationError, match="AF2_API_URL"):
            checker.url("0" * 32, "output/a.pdb", 0)
        with pytest.raises(errors.ConfigurationError, match="AF2_LINK_SECRET_ARN names no secret"):
            wiring.link_signer(Settings(data_dir=tmp_path, mode="aws", link_secret_arn=arn + "x",
                                        api_url="https://x", **names))


def test_serve_refuses_bad_options_and_a_port_in_use(data_env, capsys):
    assert main(["serve", "--cpu-workers", "-1"]) == 2
    assert "--cpu-workers" in capsys.readouterr().err
    assert main(["serve", "--gpus", "zero"]) == 1
    assert "AF2_GPUS" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", "--port", str(taken.getsockname()[1])]) == 1
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_aws_mode_uses_af2_region_for_every_client(tmp_path, monkeypatch):
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # restored afterwards: other tests keep their region
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    names = {"jobs_table": "jobs", "keys_table": "keys", "bucket": "b", "topic_arn": "arn:aws:sns:eu-west-1:1:t",
             "state_machine_arn": "arn:aws:states:eu-west-1:1:stateMachine:m"}
    services = wiring.build(Settings(data_dir=tmp_path, mode="aws", region="eu-west-1", **names))
    regions = {services.repo._client.meta.region_name, services.store._client.meta.region_name,
               services.notifier._client.meta.region_name, services.orchestrator._sfn.meta.region_name,
               services.keys._client.meta.region_name}
    assert regions == {"eu-west-1"}

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    services = wiring.build(Settings(data_dir=tmp_path, mode="aws", **names))  # no AF2_REGION: boto3's own
    assert services.repo._client.meta.region_name == "us-east-1"


@pytest.fixture
def clean_memory_env(monkeypatch):
    for name in ("TF_FORCE_UNIFIED_MEMORY", "XLA_PYTHON_CLIENT_MEM_FRACTION"):
        monkeypatch.setenv(name, "")  # recorded, so what the code under test sets is undone afterwards
        monkeypatch.delenv(name)
    return monkeypatch


def test_unified_memory_is_set_up_by_the_entry_points_before_any_device_work(tmp_path, clean_memory_env, capsys):
    import os

    services = wiring.build(Settings(data_dir=tmp_path, cpu_workers=0))
    services.close()
    assert "TF_FORCE_UNIFIED_MEMORY" not in os.environ  # off unless asked for

    clean_memory_env.setenv("AF2_UNIFIED_MEMORY", "1")
    bad = tmp_path / "bad.fasta"
    bad.write_text(">x\nMK1\n")
    assert main(["predict", str(bad), "--out", str(tmp_path / "out")]) == 2  # refused, after the set-up
    assert os.environ["TF_FORCE_UNIFIED_MEMORY"] == "1" and os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "4.0"


def test_unified_memory_keeps_values_already_in_the_environment(tmp_path, clean_memory_env):
    import os

    clean_memory_env.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "2.0")
    services = wiring.build(Settings(data_dir=tmp_path, cpu_workers=0, unified_memory=True))
    services.close()
    assert os.environ["TF_FORCE_UNIFIED_MEMORY"] == "1" and os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "2.0"


def test_a_mail_route_that_fails_keeps_the_key_and_says_how_to_route_it_again(data_env, monkeypatch, capsys):
    class Down:
        def __init__(self):
            self.routes = []

        def route(self, email, owners):
            self.routes.append((email, owners))
            if len(self.routes) == 1:
                raise OSError("SNS is unreachable")

    down = Down()
    monkeypatch.setattr(wiring, "owner_mail", lambda settings: down)
    assert main(["keys", "create", "--owner", "ann", "--email", "ann@lab.example.org"]) == 1
    out, err = capsys.readouterr()
    key = out.strip()
    assert wiring.key_store(Settings()).verify(key) == Principal("ann")  # the key was kept
    assert "af2 keys mail --email ann@lab.example.org" in err and "SNS is unreachable" in err
    assert main(["keys", "mail", "--email", "ann@lab.example.org"]) == 0
    assert down.routes[-1] == ("ann@lab.example.org", ["ann"])
