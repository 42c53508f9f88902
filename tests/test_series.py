"""Issue 4, point 9: the series is what we send upstream.

Every patch of spice_patch/series applies with `git am`, in order, to the
pristine spice-server 0.16.0 release (the tarball, extracted, committed to
a fresh repository), and each has a From, a Subject and a message body.
With --extended (./run test --extended; minutes): every prefix of the
series builds and passes spice-server's own `meson test`.
"""
from __future__ import annotations

import email
import email.policy
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PATCH_DIR = REPO / "spice_patch"
TARBALL = REPO / "subprojects" / "packagecache" / "spice-0.16.0.tar.bz2"
GIT_ENV = {"GIT_AUTHOR_NAME": "sid", "GIT_AUTHOR_EMAIL": "sid@invalid",
           "GIT_COMMITTER_NAME": "sid", "GIT_COMMITTER_EMAIL": "sid@invalid",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}
# the options of both variants (stock/meson.build)
SPICE_OPTIONS = ["-Dgstreamer=1.0", "-Dlz4=false", "-Dsasl=false",
                 "-Dopus=disabled", "-Dsmartcard=disabled", "-Dmanual=false",
                 "-Dtests=true"]


def series() -> list[Path]:
    names = [ln.strip() for ln in (PATCH_DIR / "series").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    return [PATCH_DIR / n for n in names]


def git(tree: Path, *args: str) -> str:
    env = dict(os.environ, **GIT_ENV)
    r = subprocess.run(["git", "-C", str(tree), *args], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, \
        f"git {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """spice-0.16.0 as released, one commit in a fresh git repository."""
    if not TARBALL.exists():
        pytest.fail(f"{TARBALL} missing: run ./run build first")
    top = tmp_path_factory.mktemp("pristine")
    with tarfile.open(TARBALL) as tar:
        tar.extractall(top, filter="tar")
    tree = top / "spice-0.16.0"
    assert tree.is_dir()
    git(tree, "init", "-q", "-b", "main")
    git(tree, "add", "-A", "-f")
    git(tree, "commit", "-q", "-m", "spice-server 0.16.0 (release tarball)")
    return tree


@pytest.fixture(scope="module")
def applied(pristine: Path) -> list[str]:
    """git am of each patch in order; the commit after each."""
    commits = [git(pristine, "rev-parse", "HEAD").strip()]
    for patch in series():
        git(pristine, "am", "--quiet", "--keep-cr", str(patch))
        commits.append(git(pristine, "rev-parse", "HEAD").strip())
    return commits


def test_series_lists_existing_patches():
    patches = series()
    assert patches, "spice_patch/series lists no patch"
    for p in patches:
        assert p.is_file(), f"{p.name} is listed in series but missing"
    listed = {p.name for p in patches}
    on_disk = {p.name for p in PATCH_DIR.glob("*.patch")}
    assert on_disk == listed, f"not in series: {sorted(on_disk - listed)}"


@pytest.mark.parametrize("patch", [p.name for p in series()])
def test_patch_has_from_subject_and_body(patch):
    text = (PATCH_DIR / patch).read_text(encoding="utf-8")
    msg = email.message_from_string(text, policy=email.policy.default)
    assert msg["From"] and "@" in str(msg["From"]), f"{patch}: no From"
    subject = str(msg["Subject"] or "")
    assert subject.replace("[PATCH", "").strip(), f"{patch}: no Subject"
    body = msg.get_payload()
    message = body.split("\n---\n", 1)[0] if "\n---\n" in body else ""
    assert len(message.split()) >= 5, \
        f"{patch}: no commit message body before the '---' line"
    assert "\ndiff --git " in body, f"{patch}: no diff"


def test_series_applies_with_git_am_in_order(pristine, applied):
    assert len(applied) == len(series()) + 1
    log = git(pristine, "log", "--format=%s", "--reverse").splitlines()[1:]
    for patch, subject in zip(series(), log):
        text = (PATCH_DIR / patch).read_text(encoding="utf-8")
        assert subject in " ".join(text.split()), \
            f"{patch.name}: applied as '{subject}'"
    assert git(pristine, "status", "--porcelain") == ""


@pytest.mark.extended   # per-patch builds take minutes
def test_every_prefix_builds_and_passes_meson_test(pristine, applied,
                                                   tmp_path):
    # one build directory, the commits checked out in order: ninja rebuilds
    # what each patch touches (git checkout only rewrites changed files)
    build = tmp_path / "build"
    for k, commit in enumerate(applied):
        git(pristine, "checkout", "-q", commit)
        # (ninja itself reconfigures if a patch changes a meson.build)
        setup = [["meson", "setup", str(build), str(pristine),
                  *SPICE_OPTIONS]] if k == 0 else []
        for cmd in (*setup,
                    ["ninja", "-C", str(build)],
                    ["meson", "test", "-C", str(build), "--num-processes",
                     "2", "--print-errorlogs"]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            assert r.returncode == 0, \
                (f"after {k} patch(es) ({commit[:12]}): {' '.join(cmd[:2])}"
                 f" failed:\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}")
    git(pristine, "checkout", "-q", applied[-1])
