"""The repository's own checks: lint and types clean, and both install modes give a `hub`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def test_ruff_and_mypy_are_clean():
    env = dict(os.environ, VIRTUAL_ENV=str(Path(sys.executable).parent.parent))
    result = subprocess.run(["bash", "scripts/lint"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("editable", [False, True], ids=["pip-install", "pip-install-e"])
def test_fresh_venv_install_gives_a_working_hub(tmp_path, editable):
    src = tmp_path / "src"
    # a clean copy of the tree, as a fresh clone would be
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "*.egg-info", "__pycache__", "build", ".pytest_cache", ".mypy_cache",
        ".ruff_cache"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    target = ["-e", str(src)] if editable else [str(src)]
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                    "--disable-pip-version-check", *target], check=True, timeout=600,
                   capture_output=True)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESHHUB_", "VIRTUAL_ENV"))}
    env["MESHHUB_HOME"] = str(home)
    hub = str(venv / "bin" / "hub")
    out = subprocess.run([hub, "init", "--name", "ann"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    listed = subprocess.run([hub, "plugins", "list"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "sqlite_store" in listed.stdout and "failed" not in listed.stdout, listed.stdout
    # a user error is one line, not a traceback
    bad = subprocess.run([hub, "--hub", "http://127.0.0.1:9", "send", "bob", "hi"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: cannot reach the hub") and "Traceback" not in bad.stderr
