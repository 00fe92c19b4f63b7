"""The Batch instances' boot script (template.yaml, LaunchTemplate user data) run under bash with its system faked:
the package install, the kernel module, the mount, IMDS, systemd and shutdown are small programs on PATH that
record their calls and fail when told; the script's absolute paths are moved under a temporary root. What is
checked: the ECS agent is held back unless /fsx is a mount point, the Lustre client install is retried with
backoff, and every failure (install, module, mount, any other command) takes the shutdown path.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.iac.test_template import load_template

SOURCE = "fs-0123.fsx.us-east-1.amazonaws.com@tcp:/abcdefgh"
FAKES = {
    # name: script (bash); $LOG gets one line per call; failures are counted down in $STATE/<name>.fails
    "dnf": 'echo "dnf $*" >> "$LOG"; n=$(cat "$STATE/dnf.fails" 2>/dev/null || echo 0)\n'
           'if [ "$n" -gt 0 ]; then echo $((n - 1)) > "$STATE/dnf.fails"; exit 1; fi',
    "modprobe": 'echo "modprobe $*" >> "$LOG"; [ ! -e "$STATE/modprobe.fails" ]',
    "mount": 'echo "mount $*" >> "$LOG"; n=$(cat "$STATE/mount.fails" 2>/dev/null || echo 0)\n'
             'if [ "$n" -gt 0 ]; then echo $((n - 1)) > "$STATE/mount.fails"; exit 32; fi; touch "$STATE/mounted"',
    "mountpoint": 'echo "mountpoint $*" >> "$LOG"; [ -e "$STATE/mounted" ]',
    "curl": 'echo "curl" >> "$LOG"; echo i-0abc',
    "systemctl": 'echo "systemctl $*" >> "$LOG"',
    "sleep": 'echo "sleep $*" >> "$LOG"',
    "shutdown": 'echo "shutdown $*" >> "$LOG"',
    "chmod": 'echo "chmod $*" >> "$LOG"; [ ! -e "$STATE/chmod.fails" ]',
}


def boot_script(root: Path) -> str:
    """The user data's shell part, its CloudFormation substitutions made and its paths under `root`."""
    data = load_template()["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    text = data["UserData"]["Fn::Base64"]["Fn::Sub"]
    script = text[text.index("#!/bin/bash"):text.index("--==AF2JOBS==--")]
    host, mount_name = SOURCE.split("@tcp:/")
    script = script.replace("${FileSystem.DNSName}", host).replace("${FileSystem.LustreMountName}", mount_name)
    assert "${" not in script, "a substitution the test does not make"
    for path in ("/etc/", "/fsx", "/dev/console"):
        script = script.replace(path, f"{root}{path}")
    return script


def boot(tmp_path: Path, **fails: int) -> tuple[int, list[str], Path]:
    """Runs the script with `fails` (fake name -> times it fails; modprobe/chmod: any number means always)."""
    root, bin_dir, state = tmp_path / "root", tmp_path / "bin", tmp_path / "state"
    for folder in (root / "etc", root / "dev", bin_dir, state):
        folder.mkdir(parents=True)
    for name, body in FAKES.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    for name, times in fails.items():
        (state / f"{name}.fails").write_text(str(times))
    log = tmp_path / "calls.log"
    log.touch()
    path = f"{bin_dir}:{os.environ['PATH']}"
    env = {"PATH": path, "LOG": str(log), "STATE": str(state), "HOME": str(tmp_path)}
    done = subprocess.run(["bash", "-c", boot_script(root)], env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, log.read_text().splitlines(), root


def _ecs_held_back(root: Path) -> bool:
    dropin = root / "etc" / "systemd" / "system" / "ecs.service.d" / "af2jobs-fsx.conf"
    return dropin.is_file() and f"ConditionPathIsMountPoint={root}/fsx" in dropin.read_text()


def test_a_good_boot_mounts_fsx_and_leaves_the_ecs_agent_its_condition(tmp_path):
    code, calls, root = boot(tmp_path)
    assert code == 0 and "shutdown -h now" not in calls
    assert calls.index("dnf install -y lustre-client") < calls.index("modprobe lustre") < \
        next(i for i, c in enumerate(calls) if c.startswith("mount -t lustre"))
    assert f"mount -t lustre -o relatime,flock {SOURCE} {root}/fsx" in calls
    assert (root / "etc" / "fstab").read_text().startswith(f"{SOURCE} {root}/fsx lustre ")
    assert (root / "fsx" / "databases" / "params").is_dir() and _ecs_held_back(root)
    assert (root / "etc" / "af2jobs" / "instance.json").read_text().startswith('{"instance_id": "i-0abc"')


def test_a_package_mirror_that_fails_at_first_is_retried_with_backoff(tmp_path):
    code, calls, _ = boot(tmp_path, dnf=3)
    assert code == 0 and calls.count("dnf install -y lustre-client") == 4
    assert [c for c in calls if c.startswith("sleep")][:3] == ["sleep 15", "sleep 30", "sleep 45"]


@pytest.mark.parametrize("fails,reason", [
    ({"dnf": 99}, "the Lustre client could not be installed (5 attempts)"),
    ({"modprobe": 1}, "the lustre kernel module could not be loaded"),
    ({"mount": 99}, "/fsx could not be mounted"),
    ({"chmod": 1}, "the boot script failed at line"),
])
def test_every_failure_shuts_the_instance_down_before_the_ecs_agent_can_start(tmp_path, fails, reason):
    code, calls, root = boot(tmp_path, **fails)
    assert code != 0 and calls[-1] == "shutdown -h now", calls[-3:]
    assert reason in (root / "dev" / "console").read_text()
    assert _ecs_held_back(root)  # written first: whatever failed, the agent does not start without /fsx
    if "dnf" in fails:
        assert calls.count("dnf install -y lustre-client") == 5 and not any(c.startswith("mount") for c in calls)
    if "mount" in fails:
        assert sum(c.startswith("mount -t lustre") for c in calls) == 6 and not (root / "etc" / "fstab").exists()

