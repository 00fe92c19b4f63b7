"""The Batch images, checked without a Docker engine: targets, build context, the pip installs each stage runs
(resolved for the stage's own Python and C library, binary wheels only, as the slim images have no compiler),
the entrypoint, and the ECR helper that `make images` uses."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "batch_image"
DOCKERFILE = IMAGE / "Dockerfile"
ENTRYPOINT = IMAGE / "entrypoint.sh"

# Base images the Dockerfile may use -> (Python version, glibc version); a new base needs a line here.
BASES = {
    r"python:(3\.\d+)-slim-bookworm": (None, (2, 36)),  # Python from the tag
    r"nvidia/cuda:[\d.]+-base-ubuntu24\.04": ("3.12", (2, 39)),  # Ubuntu 24.04's python3
}


def _stages() -> dict[str, dict]:
    """name -> {"base": image, "lines": [instructions]}, ARG defaults substituted into FROM lines."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    stages: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.I)
        if match:
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), match.group(1))
            current = stages[match.group(2)] = {"base": base, "lines": []}
        elif current is not None and line.strip() and not line.startswith("#"):
            current["lines"].append(line.strip())
    return stages


def test_the_dockerfile_has_the_msa_and_predict_targets_both_running_the_entrypoint():
    stages = _stages()
    assert {"msa", "predict"} <= set(stages)
    for name in ("msa", "predict"):
        lines = stages[name]["lines"]
        assert 'ENTRYPOINT ["/usr/local/bin/af2jobs-entrypoint"]' in lines, name
        assert any(line.startswith("COPY") and "batch_image/entrypoint.sh /usr/local/bin/af2jobs-entrypoint" in line
                   for line in lines), name


def test_everything_copied_from_the_context_exists_and_passes_the_ignore_file():
    allowed = {line[1:].rstrip("/") for line in (IMAGE / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    sources = []
    for stage in _stages().values():
        for line in stage["lines"]:
            if line.startswith("COPY") and "--from" not in line:
                words = [w for w in shlex.split(line)[1:] if not w.startswith("--")]
                sources += words[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source.rstrip("/")).exists(), source
        assert source.rstrip("/") in allowed, f"{source} is copied but Dockerfile.dockerignore leaves it out"


def _pip_arguments(stage: dict, subcommand: str) -> list[list[str]]:
    """The requirement arguments of each `pip <subcommand>` in a stage: options and --wheel-dir's value left out
    ('$(ls /wheels/af2jobs-*.whl)[x]' and '.', the af2jobs source, kept as they are)."""
    found = []
    for line in stage["lines"]:
        for command in line.split("&&"):
            if f"pip {subcommand}" in command:
                words = shlex.split(command.split(f"pip {subcommand}", 1)[1])
                found.append([w for w, before in zip(words, [""] + words) if not w.startswith("-")
                              and before != "--wheel-dir"])
    return found


def _platforms(glibc: tuple[int, int]) -> list[str]:
    tags = ["manylinux2014_x86_64", "linux_x86_64"]
    tags += [f"manylinux_2_{minor}_x86_64" for minor in range(17, glibc[1] + 1)]
    return tags


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """What the image's wheel stage leaves in /wheels, built the same way: the af2jobs wheel from a copy of what
    the stage copies (no build/ left in the repo), and the wheels of the source-only dependencies it names."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    built = _pip_arguments(_stages()["wheel"], "wheel")
    assert ["."] in built, "the wheel stage no longer builds the af2jobs wheel"
    for requirements in built:
        requirements = [str(source) if r == "." else r for r in requirements]
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
                                 str(out), *requirements], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(out.glob("af2jobs-*.whl"))) == 1
    return out


@pytest.mark.parametrize("target", ["msa", "predict"])
def test_the_stages_pip_install_resolves_to_wheels_for_its_python_and_libc(target, wheels, tmp_path):
    stage = _stages()[target]
    known = [(re.fullmatch(pattern, stage["base"]), value) for pattern, value in BASES.items()]
    match, (python, glibc) = next(((m, v) for m, v in known if m), (None, (None, None)))
    assert match, f"unknown base image {stage['base']}: add its Python and glibc to BASES"
    python = python or match.group(1)
    installs = _pip_arguments(stage, "install")
    pinned = [i for i in installs if i == ["/tmp/requirements-mmseqs.txt"]]  # MMseqs2, by hash, without deps
    assert len(pinned) == 1 and any(line.startswith("COPY requirements-mmseqs.txt /tmp/") for line in stage["lines"])
    (install,) = [i for i in installs if i not in pinned]
    assert "--find-links=/wheels" in " ".join(stage["lines"]), "the install must see the wheel stage's wheels"
    (wheel,) = wheels.glob("af2jobs-*.whl")
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    requirements = []
    for requirement in install:
        match = re.fullmatch(r"\$\(ls /wheels/af2jobs-\*\.whl\)(\[([\w,]+)\])?", requirement)
        if match:
            wanted = set((match.group(2) or "").split(",")) - {""}
            assert wanted <= extras, f"pyproject.toml has no extra {sorted(wanted - extras)}"
            requirements.append(f"{wheel}[{match.group(2)}]" if match.group(2) else str(wheel))
        else:
            requirements.append(requirement)
    platforms = [arg for tag in _platforms(glibc) for arg in ("--platform", tag)]
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--report", str(report),
         "--only-binary=:all:", *platforms, "--implementation", "cp", "--python-version", python,
         "--find-links", str(wheels), "--target", str(tmp_path / "target"), *requirements],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mmseqs = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--no-deps",
         "--require-hashes", "--only-binary=:all:", *platforms, "--implementation", "cp", "--python-version", python,
         "--target", str(tmp_path / "mmseqs"), "-r", str(ROOT / "requirements-mmseqs.txt")],
        capture_output=True, text=True, timeout=600)
    assert mmseqs.returncode == 0, mmseqs.stderr[-3000:]
    names = {i["metadata"]["name"].lower().replace("_", "-") for i in json.loads(report.read_text())["install"]}
    assert {"af2jobs", "jax", "dm-haiku", "alphafold-colabfold", "pyhmmer", "pdbfixer", "openmm"} <= names
    if target == "predict":
        assert "jax-cuda12-plugin" in names
    else:
        assert "google-crc32c" in names and "jax-cuda12-plugin" not in names


def _entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ENTRYPOINT), *args], capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ["PATH"], **env})


def test_the_entrypoint_becomes_the_jobs_command(tmp_path):
    # exec: the command replaces the shell, so its parent is whoever started the entrypoint (this test).
    result = _entrypoint(sys.executable, "-c", "import os, sys; print(os.getppid(), sys.argv[1:])", "x",
                         AF2_DB_ROOT=str(tmp_path), AWS_BATCH_JOB_ID="job-1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(" ", 1) == [str(os.getpid()), "['x']\n"]
    assert "batch job job-1 attempt 1" in result.stderr


def test_the_entrypoint_refuses_to_run_without_the_file_system(tmp_path):
    result = _entrypoint("true", AF2_DB_ROOT=str(tmp_path / "not-mounted"))
    assert result.returncode == 3
    assert "is the file system mounted" in result.stderr
    assert _entrypoint().returncode == 2


def test_the_entrypoint_creates_the_compile_cache_folder(tmp_path):
    cache = tmp_path / "cache" / "jax"
    assert _entrypoint("true", JAX_COMPILATION_CACHE_DIR=str(cache)).returncode == 0
    assert cache.is_dir()


def _ecr_module():
    spec = importlib.util.spec_from_file_location("ecr", IMAGE / "ecr.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeCloudFormation:
    def describe_stacks(self, StackName):
        assert StackName == "af2jobs"
        return {"Stacks": [{"Outputs": [{"OutputKey": "MsaRepositoryUri", "OutputValue": "1.dkr.ecr/msa"}]}]}


class FakeEcr:
    def get_authorization_token(self):
        return {"authorizationData": [{"authorizationToken": base64.b64encode(b"AWS:s3cret").decode()}]}


def test_the_ecr_helper_reads_stack_outputs_and_the_login_password():
    ecr = _ecr_module()
    assert ecr.stack_output(FakeCloudFormation(), "af2jobs", "MsaRepositoryUri") == "1.dkr.ecr/msa"
    with pytest.raises(SystemExit, match="no output PredictRepositoryUri"):
        ecr.stack_output(FakeCloudFormation(), "af2jobs", "PredictRepositoryUri")
    assert ecr.login_password(FakeEcr()) == "s3cret"


def test_the_repository_outputs_make_images_reads_exist():
    from cfnlint.decode import decode

    template, _ = decode(str(ROOT / "template.yaml"))
    outputs = template["Outputs"]
    makefile = (ROOT / "Makefile").read_text()
    for key in re.findall(r"ecr\.py uri --stack \S+ (\w+)", makefile):
        assert key in outputs, key
    assert "MsaRepositoryUri" in makefile and "PredictRepositoryUri" in makefile


def test_the_entrypoint_runs_only_the_predict_stage_under_the_gpu_agent(tmp_path):
    fake_agent = tmp_path / "gpumon.py"
    fake_agent.write_text("import sys; print('agent', sys.argv[1:])\n")
    stage = ["python3", "-m", "af2jobs.awsrun.batch", "predict", "--job-id", "J7"]
    result = _entrypoint(*stage, AF2_GPUMON=str(fake_agent))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "agent " + str(["--job-id", "J7", "--interval", "10", "--", *stage])
    msa = _entrypoint(sys.executable, "-c", "print('msa ran')", "af2jobs.awsrun.batch", "msa", AF2_GPUMON=str(fake_agent))
    assert msa.stdout.strip() == "msa ran"
    # On AWS (AF2_BUCKET set) the agent puts its summary beside the job's outputs, for MarkSucceeded to record.
    aws = _entrypoint(*stage, AF2_GPUMON=str(fake_agent), AF2_BUCKET="results")
    assert aws.stdout.strip() == "agent " + str(["--job-id", "J7", "--interval", "10", "--s3-uri",
                                                 "s3://results/jobs/J7/output/gpu_summary.json", "--", *stage])


def test_the_dockerfile_puts_the_agent_where_the_entrypoint_looks():
    text = (IMAGE / "Dockerfile").read_text()
    assert "COPY monitoring/gpumon.py /opt/af2jobs/gpumon.py" in text
    assert "/opt/af2jobs/gpumon.py" in ENTRYPOINT.read_text()
