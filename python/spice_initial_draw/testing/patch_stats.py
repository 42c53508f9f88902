"""The patch series of spice_patch/ as data: the series in order, their
patches and cover letters, and what each adds (code and comment lines).

spice_patch/series lists the series directories in the order they apply;
each directory has its own `series` file (its patches in order, the cover
letter 0000-cover-letter.patch not among them: git am cannot apply it),
whose `Depends-on:` line names the series it applies after.

    python -m spice_initial_draw.testing.patch_stats spice_patch

prints, per series, the patch count, the added code and comment lines and
the comment share (tests/test_series.py holds each to COMMENT_SHARE_LIMIT).
"""
from __future__ import annotations

import argparse
import email
import email.policy
import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["COMMENT_SHARE_LIMIT", "COVER_LETTER", "AddedLines", "Series",
           "added_lines", "count_added", "depends_on", "read_series",
           "series_names", "subject"]

COVER_LETTER = "0000-cover-letter.patch"
# the largest share of comment lines among a series' added lines
COMMENT_SHARE_LIMIT = 0.10


def _listed(path: Path) -> list[str]:
    """The names a series file lists: one a line, '#' comment lines and
    blank lines left out."""
    return [ln.strip() for ln in path.read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


def series_names(patch_dir: Path) -> list[str]:
    """The series directories, in the order spice_patch/series lists them."""
    return _listed(patch_dir / "series")


def subject(patch: Path) -> str:
    """The patch's Subject, unfolded, with its `[PATCH n/m]` prefix."""
    msg = email.message_from_string(patch.read_text(encoding="utf-8"),
                                    policy=email.policy.default)
    return " ".join(str(msg["Subject"] or "").split())


def depends_on(cover_letter: Path) -> list[str]:
    """The series the cover letter's `Depends-on:` line names (none when
    the line is absent or says `none`)."""
    m = re.search(r"^Depends-on:[ \t]*(.*)$", cover_letter.read_text(encoding="utf-8"),
                  re.MULTILINE)
    if not m or m.group(1).strip().lower() in ("", "none"):
        return []
    return [n for n in re.split(r"[,\s]+", m.group(1).strip()) if n]


@dataclass(frozen=True)
class Series:
    """One series directory of spice_patch/."""
    name: str
    directory: Path

    @property
    def patches(self) -> list[Path]:
        """The patches, in the order of the directory's series file."""
        return [self.directory / n for n in _listed(self.directory / "series")]

    @property
    def cover_letter(self) -> Path:
        return self.directory / COVER_LETTER

    @property
    def depends_on(self) -> list[str]:
        return depends_on(self.cover_letter) if self.cover_letter.exists() else []


def read_series(patch_dir: Path) -> list[Series]:
    """Every series of spice_patch/, in order."""
    return [Series(name, patch_dir / name) for name in series_names(patch_dir)]


def added_lines(patch: Path) -> list[str]:
    """The lines a patch adds (its diff's '+' lines, without the '+'),
    the '+++' file headers left out."""
    text = patch.read_text(encoding="utf-8")
    diff = text[text.find("\ndiff --git "):] if "\ndiff --git " in text else ""
    return [ln[1:] for ln in diff.splitlines()
            if ln.startswith("+") and not ln.startswith("+++ ")]


@dataclass(frozen=True)
class AddedLines:
    """Non-blank added lines: code and comment."""
    code: int
    comment: int

    @property
    def share(self) -> float:
        """Comment lines among all non-blank added lines (0 when none)."""
        total = self.code + self.comment
        return self.comment / total if total else 0.0

    def __add__(self, other: AddedLines) -> AddedLines:
        return AddedLines(self.code + other.code, self.comment + other.comment)


def _is_comment_start(s: str) -> bool:
    """Whether a stripped line starts as a comment: //, /*, or a block
    comment's continuation (`*` alone, `* ...`, `*/`; `*ptr = ...` is code)."""
    return s == "*" or s.startswith(("//", "/*", "*/", "* ", "*\t"))


def _opens_block(s: str) -> bool:
    """Whether a /* */ comment is still open at the end of line `s`."""
    open_ = False
    i = 0
    while i < len(s):
        two = s[i:i + 2]
        if not open_ and two == "//":
            break
        if not open_ and two == "/*":
            open_, i = True, i + 2
            continue
        if open_ and two == "*/":
            open_, i = False, i + 2
            continue
        i += 1
    return open_


def count_added(lines: list[str]) -> AddedLines:
    """Count added non-blank lines as comment or code: a comment line's
    stripped text starts with //, /* or * (as a comment's continuation
    line does), or the line is inside a /* */ block; every other non-blank
    line is code (so is a line with code before a trailing comment).  The
    added lines of a hunk follow each other, so a block comment spans them
    (string literals holding comment markers are not told apart)."""
    code = comment = 0
    in_block = False
    for line in lines:
        s = line.strip()
        if not s:
            continue
        if in_block:
            comment += 1
            if "*/" in s:
                in_block = _opens_block(s.split("*/", 1)[1])
            continue
        if _is_comment_start(s):
            comment += 1
        else:
            code += 1
        in_block = _opens_block(s)
    return AddedLines(code, comment)


def series_stats(series: Series) -> AddedLines:
    total = AddedLines(0, 0)
    for patch in series.patches:
        total = total + count_added(added_lines(patch))
    return total


def table(patch_dir: Path) -> str:
    """The per-series table: patches, added code lines, added comment
    lines, comment share; then the total."""
    rows = [("series", "patches", "code", "comment", "share")]
    total, count = AddedLines(0, 0), 0
    for s in read_series(patch_dir):
        st = series_stats(s)
        total, count = total + st, count + len(s.patches)
        rows.append((s.name, str(len(s.patches)), str(st.code), str(st.comment),
                     f"{st.share:.1%}"))
    rows.append(("all", str(count), str(total.code), str(total.comment),
                 f"{total.share:.1%}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                  for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m spice_initial_draw.testing.patch_stats",
        description="added code and comment lines of each series of spice_patch/")
    p.add_argument("patch_dir", type=Path, help="the spice_patch directory")
    args = p.parse_args(argv)
    print(table(args.patch_dir))
    print(f"(comment share limit: {COMMENT_SHARE_LIMIT:.0%} a series)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
