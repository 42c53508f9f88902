"""Issue 4, point 9: the series are what we send upstream.

spice_patch/series lists the series directories in the order they apply
(core, multi-client, hardening); each has its own `series` file, its
patches and a cover letter (0000-cover-letter.patch) whose `Depends-on:`
line names the series it applies after.  Each series applies with
`git am` to the pristine spice-server 0.16.0 release (the tarball,
extracted, committed to a fresh repository) after exactly the series it
depends on, and all of them in order; each patch has a placeholder From,
a Subject that fits a short log and a message body, and the comments are
at most a tenth of what a series adds.  With --extended (./run test
--extended; minutes): every prefix of each series builds and passes
spice-server's own `meson test`.
"""
from __future__ import annotations

import email
import email.policy
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from spice_initial_draw.testing.patch_stats import (
    COMMENT_SHARE_LIMIT,
    COVER_LETTER,
    Series,
    added_lines,
    count_added,
    read_series,
    subject,
)

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
# the author line of every patch until one of us submits them (README.md)
PLACEHOLDER_AUTHOR = "spice-initial-draw developers <devel@spice-initial-draw.invalid>"
SUBJECT_LIMIT, LINE_LIMIT = 72, 100
NUMBERED = re.compile(r"^\[PATCH(?: v\d+)? (\d+)/(\d+)\] *")


def series() -> list[Series]:
    """The series of spice_patch/series, in order."""
    return read_series(PATCH_DIR)


def by_name(name: str) -> Series:
    return next(s for s in series() if s.name == name)


def dependencies(s: Series) -> list[Series]:
    """The series `s` depends on, in the order they apply."""
    return [d for d in series() if d.name in s.depends_on]


def all_patches() -> list[tuple[Series, Path]]:
    return [(s, p) for s in series() for p in s.patches]


def message(patch: Path) -> email.message.EmailMessage:
    msg = email.message_from_string(patch.read_text(encoding="utf-8"),
                                    policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def git(tree: Path, *args: str) -> str:
    env = dict(os.environ, **GIT_ENV)
    r = subprocess.run(["git", "-C", str(tree), *args], env=env,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, \
        f"git {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """spice-0.16.0 as released, one commit (tagged `release`) in a fresh
    git repository."""
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
    git(tree, "tag", "release")
    return tree


@pytest.fixture
def release(pristine: Path) -> Path:
    """The pristine tree, back at the release commit (the tests share it)."""
    subprocess.run(["git", "-C", str(pristine), "am", "--abort"], capture_output=True,
                   env=dict(os.environ, **GIT_ENV), check=False)  # none may be under way
    git(pristine, "checkout", "-q", "-f", "-B", "main", "release")
    git(pristine, "clean", "-q", "-f", "-d", "-x")
    return pristine


def apply(tree: Path, patches: list[Path]) -> list[str]:
    """git am of each patch in order; the commit after each."""
    commits = []
    for patch in patches:
        git(tree, "am", "--quiet", "--keep-cr", str(patch))
        commits.append(git(tree, "rev-parse", "HEAD").strip())
    return commits


def assert_applied_as(tree: Path, patches: list[Path]) -> None:
    """The last len(patches) commits are the patches, in order, and the
    tree is clean."""
    log = git(tree, "log", "--format=%s", "--reverse",
              f"-{len(patches)}").splitlines() if patches else []
    assert len(log) == len(patches)
    for patch, applied_subject in zip(patches, log):
        assert applied_subject in NUMBERED.sub("", subject(patch)), \
            f"{patch.name}: applied as '{applied_subject}'"
    assert git(tree, "status", "--porcelain") == ""


def test_top_series_file_lists_exactly_the_series_directories():
    names = [s.name for s in series()]
    assert names, "spice_patch/series lists no series"
    assert len(set(names)) == len(names), f"a series is listed twice: {names}"
    on_disk = {d.name for d in PATCH_DIR.iterdir() if d.is_dir()}
    assert on_disk == set(names), \
        f"not in spice_patch/series: {sorted(on_disk - set(names))}; " \
        f"listed but not a directory: {sorted(set(names) - on_disk)}"


@pytest.mark.parametrize("name", [s.name for s in series()])
def test_series_file_lists_exactly_the_patches_of_its_directory(name):
    s = by_name(name)
    patches = s.patches
    assert patches, f"spice_patch/{name}/series lists no patch"
    for p in patches:
        assert p.is_file(), f"{name}/{p.name} is listed in its series but missing"
    listed = [p.name for p in patches]
    assert len(set(listed)) == len(listed), f"{name}: a patch is listed twice"
    assert COVER_LETTER not in listed, \
        f"{name}/series lists the cover letter, which git am cannot apply"
    on_disk = {p.name for p in s.directory.glob("*.patch")} - {COVER_LETTER}
    assert on_disk == set(listed), f"not in {name}/series: {sorted(on_disk - set(listed))}"


@pytest.mark.parametrize("patch", [f"{s.name}/{p.name}" for s, p in all_patches()])
def test_patch_has_a_placeholder_author_a_subject_and_a_body(patch):
    msg = message(PATCH_DIR / patch)
    author = str(msg["From"] or "")
    assert author, f"{patch}: no From"
    assert re.search(r"<[^@<>\s]+@[^<>\s]+\.invalid>$", author), \
        f"{patch}: From {author!r} is not a placeholder with an .invalid address " \
        f"(README.md: {PLACEHOLDER_AUTHOR})"
    assert NUMBERED.sub("", subject(PATCH_DIR / patch)).strip(), f"{patch}: no Subject"
    body = msg.get_payload()
    assert isinstance(body, str)
    text = body.split("\n---\n", 1)[0] if "\n---\n" in body else ""
    assert len(text.split()) >= 5, \
        f"{patch}: no commit message body before the '---' line"
    assert "\ndiff --git " in body, f"{patch}: no diff"


@pytest.mark.parametrize("patch", [f"{s.name}/{p.name}" for s, p in all_patches()])
def test_patch_subject_fits_a_short_log(patch):
    text = NUMBERED.sub("", subject(PATCH_DIR / patch))
    assert len(text) <= SUBJECT_LIMIT, \
        f"{patch}: the subject has {len(text)} characters (at most {SUBJECT_LIMIT}): {text!r}"


@pytest.mark.parametrize("patch", [f"{s.name}/{p.name}" for s, p in all_patches()])
def test_patch_adds_no_line_over_100_columns(patch):
    long = [ln for ln in added_lines(PATCH_DIR / patch)
            if len(ln.expandtabs(8)) > LINE_LIMIT]
    assert not long, f"{patch}: {len(long)} added line(s) over {LINE_LIMIT} columns: {long[:3]}"


@pytest.mark.parametrize("name", [s.name for s in series()])
def test_patches_of_a_series_are_numbered_one_to_n_of_n(name):
    patches = by_name(name).patches
    numbers = []
    for p in patches:
        m = NUMBERED.match(subject(p))
        assert m, f"{name}/{p.name}: the subject has no [PATCH n/m]: {subject(p)!r}"
        numbers.append((int(m.group(1)), int(m.group(2))))
    n = len(patches)
    assert numbers == [(i, n) for i in range(1, n + 1)], \
        f"{name}: numbered {[f'{a}/{b}' for a, b in numbers]}, not 1/{n}..{n}/{n}"


@pytest.mark.parametrize("name", [s.name for s in series()])
def test_cover_letter_introduces_the_series_and_names_what_it_depends_on(name):
    s = by_name(name)
    assert s.cover_letter.is_file(), f"{name}: no {COVER_LETTER}"
    m = NUMBERED.match(subject(s.cover_letter))
    n = len(s.patches)
    assert m and (int(m.group(1)), int(m.group(2))) == (0, n), \
        f"{name}: the cover letter's subject is not [PATCH 0/{n}] ...: {subject(s.cover_letter)!r}"
    title = NUMBERED.sub("", subject(s.cover_letter)).strip()
    assert title and "SUBJECT HERE" not in title, f"{name}: the cover letter has no subject"
    body = str(message(s.cover_letter).get_payload())
    assert "BLURB HERE" not in body and len(body.split()) >= 20, \
        f"{name}: the cover letter does not say what the series fixes"
    before = [d.name for d in series()][:[d.name for d in series()].index(name)]
    unknown = [d for d in s.depends_on if d not in before]
    assert not unknown, \
        f"{name}: Depends-on names {unknown}, not among the series before it ({before})"


@pytest.mark.parametrize("name", [s.name for s in series()])
def test_series_applies_with_git_am_after_the_series_it_depends_on(release, name):
    s = by_name(name)
    for dep in dependencies(s):
        apply(release, dep.patches)
    apply(release, s.patches)
    assert_applied_as(release, s.patches)


def test_all_series_apply_with_git_am_in_order(release):
    patches = [p for _, p in all_patches()]
    apply(release, patches)
    assert_applied_as(release, patches)


@pytest.mark.parametrize("name", [s.name for s in series()])
def test_comments_are_at_most_a_tenth_of_the_added_lines(name):
    s = by_name(name)
    per_patch = {p.name: count_added(added_lines(p)) for p in s.patches}
    total = sum(per_patch.values(), count_added([]))
    worst = sorted(per_patch.items(), key=lambda kv: -kv[1].comment)[:3]
    assert total.share <= COMMENT_SHARE_LIMIT, \
        (f"{name}: {total.comment} comment lines of {total.code + total.comment} added "
         f"({total.share:.1%}, at most {COMMENT_SHARE_LIMIT:.0%}); most in "
         + ", ".join(f"{p} ({c.comment})" for p, c in worst))


@pytest.mark.extended   # per-patch builds take minutes
@pytest.mark.parametrize("name", [s.name for s in series()])
def test_every_prefix_of_a_series_builds_and_passes_meson_test(release, name,
                                                                tmp_path):
    # the series it depends on first; prefix 0 is the tree after them.
    # One build directory, the commits checked out in order: ninja rebuilds
    # what each patch touches (git checkout only rewrites changed files)
    s = by_name(name)
    for dep in dependencies(s):
        apply(release, dep.patches)
    commits = [git(release, "rev-parse", "HEAD").strip(), *apply(release, s.patches)]
    build = tmp_path / "build"
    for k, commit in enumerate(commits):
        git(release, "checkout", "-q", commit)
        # (ninja itself reconfigures if a patch changes a meson.build)
        setup = [["meson", "setup", str(build), str(release),
                  *SPICE_OPTIONS]] if k == 0 else []
        for cmd in (*setup,
                    ["ninja", "-C", str(build)],
                    ["meson", "test", "-C", str(build), "--num-processes",
                     "2", "--print-errorlogs"]):
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
            assert r.returncode == 0, \
                (f"{name} after {k} patch(es) ({commit[:12]}): {' '.join(cmd[:2])}"
                 f" failed:\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}")
    git(release, "checkout", "-q", commits[-1])
