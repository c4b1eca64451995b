"""Golden files: the scripts rendered for every example, on the local site and the test cluster site.

``hpcjobs.api.plan`` is pure (no I/O beyond reading the job file and code folders), so the
rendered text only varies with the machine's home directory, user name and HPCJOBS_HOME;
those are replaced by placeholders before comparing.  Regenerate after an intended change
with::

    python3 -m pytest tests/unit/test_golden.py --update-golden

and review the diff of ``tests/golden/``.  Every rendered script must also pass ``bash -n``
and ``shellcheck -S error``.
"""

from __future__ import annotations

import difflib
import getpass
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcjobs import __version__
from hpcjobs.plan import Plan


@pytest.fixture(autouse=True)
def _tracking_as_users_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Golden scripts show what a user gets, MLflow line included (conftest turns tracking off)."""
    monkeypatch.delenv("HPCJOBS_TRACKING", raising=False)


REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
SITES = ("local", "testcluster")
SITE_FILES = {"testcluster": REPO / "site-configs" / "testcluster.yml"}
JOB_NAME = "golden_job"


def _is_job_file(path: Path) -> bool:
    return "Component.schema.json" not in path.read_text(encoding="utf-8")[:400]


EXAMPLES = sorted(p for p in (REPO / "examples").rglob("*.yml") if _is_job_file(p))


def example_id(path: Path) -> str:
    return str(path.relative_to(REPO / "examples").with_suffix("")).replace("/", "--")


def normalise(text: str, plan: Plan, home: Path) -> str:
    """Replace what differs between machines (paths, user, version, code digests) by placeholders."""
    root = plan.job_dir.rsplit("/", 1)[0]
    out = text.replace(root, "@JOB_ROOT@")
    out = out.replace(str(home), "@HPCJOBS_HOME@")
    # before @HOME@: the interpreter often lives under the home directory (pyenv, venvs)
    out = out.replace(sys.executable, "@PYTHON@")
    user_home = os.path.expanduser("~")
    if user_home not in ("/", ""):
        out = out.replace(user_home, "@HOME@")
    out = out.replace(str(REPO), "@REPO@")
    out = out.replace(sys.executable, "@PYTHON@")
    out = re.sub(r"(\.snapshots/)[0-9a-f]{16,64}", r"\1@DIGEST@", out)
    out = out.replace(f"hpcjobs {__version__}", "hpcjobs @VERSION@")
    user = getpass.getuser()
    out = re.sub(rf"(?<=/){re.escape(user)}(?=/|$|\s|\")", "@USER@", out)
    return out


def rendered_scripts(plan: Plan) -> dict[str, str]:
    """Every script of a plan by golden-file suffix: the submitted ones and helper .sh files."""
    out = {("" if s.key == "main" else f".{s.key}"): s.text for s in plan.scripts}
    for path, data in sorted(plan.files.items()):
        if path.endswith(".sh"):
            rel = path.removeprefix(plan.job_dir + "/").replace("/", "--")
            out[f".file-{rel.removesuffix('.sh')}"] = data.decode("utf-8")
    return out


def golden_path(example: Path, site: str, suffix: str) -> Path:
    return GOLDEN / f"{example_id(example)}.{site}{suffix}.sh"


def make_plan(example: Path, site: str) -> Plan:
    from hpcjobs import api

    return api.plan(example, [], name=JOB_NAME, site=None if site == "local" else site)


def skip_missing_site(site: str) -> None:
    path = SITE_FILES.get(site)
    if path is not None and not path.exists():
        pytest.skip(f"{path.relative_to(REPO)} does not exist yet (another engineer writes it)")


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("example", EXAMPLES, ids=[example_id(p) for p in EXAMPLES])
def test_golden(example: Path, site: str, hpcjobs_home: Path, request: pytest.FixtureRequest) -> None:
    skip_missing_site(site)
    plan = make_plan(example, site)
    scripts = rendered_scripts(plan)
    assert scripts, "a plan without scripts"
    update = request.config.getoption("--update-golden")
    mismatches = []
    for suffix, text in scripts.items():
        gold = golden_path(example, site, suffix)
        got = normalise(text, plan, hpcjobs_home)
        assert "@@" not in got
        if update:
            GOLDEN.mkdir(parents=True, exist_ok=True)
            if not gold.exists() or gold.read_text(encoding="utf-8") != got:
                gold.write_text(got, encoding="utf-8")
            continue
        if not gold.exists():
            mismatches.append(
                f"{gold.relative_to(REPO)} is missing (run pytest {Path(__file__).relative_to(REPO)} --update-golden)"
            )
            continue
        want = gold.read_text(encoding="utf-8")
        if want != got:
            diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), str(gold.name), "rendered"))
            mismatches.append(diff)
    assert not mismatches, "\n".join(mismatches)
    # a golden file nobody renders any more is stale
    prefix = f"{example_id(example)}.{site}"
    stale = [p for p in GOLDEN.glob(f"{prefix}*.sh") if p.name[len(prefix) :].removesuffix(".sh") not in scripts]
    if update:
        for p in stale:
            p.unlink()
    else:
        assert not stale, f"stale golden files: {[p.name for p in stale]}"


def test_no_orphan_golden_files() -> None:
    ids = {f"{example_id(p)}.{s}" for p in EXAMPLES for s in SITES}
    orphans = [p.name for p in GOLDEN.glob("*.sh") if not any(p.name.startswith(i + ".") for i in ids)]
    assert not orphans, f"golden files of examples or sites that no longer exist: {orphans}"


def test_golden_files_hold_no_machine_specific_paths() -> None:
    home = os.path.expanduser("~")
    for p in GOLDEN.glob("*.sh"):
        text = p.read_text(encoding="utf-8")
        assert str(REPO) not in text, p.name
        if home not in ("/", ""):
            assert home + "/" not in text, p.name


# --------------------------------------------------------------------------- the rendered scripts are valid bash
def _all_scripts(hpcjobs_home: Path, site: str) -> list[tuple[str, str]]:
    out = []
    for example in EXAMPLES:
        plan = make_plan(example, site)
        for suffix, text in rendered_scripts(plan).items():
            out.append((f"{example_id(example)}.{site}{suffix}", text))
    return out


@pytest.mark.parametrize("site", SITES)
def test_rendered_scripts_pass_bash_n(site: str, hpcjobs_home: Path, tmp_path: Path) -> None:
    skip_missing_site(site)
    failures = []
    for name, text in _all_scripts(hpcjobs_home, site):
        path = tmp_path / f"{name}.sh"
        path.write_text(text, encoding="utf-8")
        res = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            failures.append(f"{name}: {res.stderr}")
    assert not failures, "\n".join(failures)


def _shellcheck() -> str | None:
    found = shutil.which("shellcheck")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    # CI images may not have it yet; it is a Debian package
    subprocess.run(["apt-get", "install", "-y", "-qq", "shellcheck"], capture_output=True, check=False, timeout=300)
    return shutil.which("shellcheck")


@pytest.mark.parametrize("site", SITES)
def test_rendered_scripts_pass_shellcheck(site: str, hpcjobs_home: Path, tmp_path: Path) -> None:
    skip_missing_site(site)
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck is not installed and cannot be installed here (apt-get install -y shellcheck)")
    paths = []
    for name, text in _all_scripts(hpcjobs_home, site):
        path = tmp_path / f"{name}.sh"
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    res = subprocess.run([shellcheck, "-S", "error", "-s", "bash", *paths], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
