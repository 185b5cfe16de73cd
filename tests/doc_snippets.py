"""Code blocks of README.md and docs/*.md, and how each is to be checked.

The convention (docs/README.md): a block's language says what it is, an optional
``<!-- doc-test: ... -->`` line right above the fence says what it needs.

    ```python / ```pycon / ```ipython   run (one Python/IPython session per page)
    ```console                          "$ " lines are commands, the rest is their output
    ```sh                               every line is a command
    ```toml                             a configuration file: validated
    ```text / ```jinja / ```sshconfig   shown, not run (output, listings, templates, files)

    <!-- doc-test: needs lsf -->            a system this machine lacks: not run
    <!-- doc-test: setup: def f(x): ... --> hidden Python run before the block
    <!-- doc-test: own-cluster -->          Python that starts its own cluster (no page cluster)
    <!-- doc-test: cluster mycluster -->    a cluster of 4 engines runs in that profile first
    <!-- doc-test: fails -->                commands that must fail, with a message, no traceback
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

RUN = {"python", "pycon", "ipython", "console", "sh", "toml"}
SHOWN = {"text", "jinja", "sshconfig"}
# Systems the CI machine does not have (ci/README.md lists the ones it has).
MISSING_SYSTEMS = {
    "lsf": "IBM LSF (tests use a fake)",
    "pbspro": "PBS Pro / OpenPBS (CI has SLURM's Torque-style qsub wrappers only)",
    "winhpc": "Microsoft HPC Pack",
    "htcondor": "HTCondor",
    "gpu": "GPUs",
    "site": "a real site: its login node, queues, accounts, more nodes than this machine",
    "jupyter": "an interactive Jupyter front end (notebook, lab or console)",
    "install": "a machine to install on: the command installs system-wide (CI itself ran it)",
    "benchmark": "a quiet machine and minutes to hours: benchmarks run on demand, not in CI",
}
_MARK = re.compile(r"^<!--\s*doc-test:\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marks: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def needs(self) -> list[str]:
        return self.marks.get("needs", "").replace(",", " ").split()

    def problems(self) -> list[str]:
        """What is wrong with the marking itself (no running needed)."""
        out = []
        if not self.lang:
            out.append(f"{self.where}: a code block without a language; say what it is "
                       f"(```{'/```'.join(sorted(RUN | SHOWN))}), see docs/README.md")
        elif self.lang not in RUN | SHOWN:
            out.append(f"{self.where}: unknown block language {self.lang!r} (known: {', '.join(sorted(RUN | SHOWN))})")
        for name in self.needs:
            if name not in MISSING_SYSTEMS:
                out.append(f"{self.where}: needs {name!r}: only systems the CI machine lacks may be named "
                           f"({', '.join(MISSING_SYSTEMS)}); CI has SLURM, SGE, PBS wrappers, sshd, MPI")
        unknown = set(self.marks) - {"needs", "setup", "own-cluster", "fails", "cluster"}
        if unknown:
            out.append(f"{self.where}: unknown doc-test mark(s) {', '.join(sorted(unknown))}")
        return out

    @property
    def runs(self) -> bool:
        return self.lang in RUN and not self.needs

    def commands(self) -> list[str]:
        """Shell commands of a console or sh block (continuation lines joined)."""
        lines = self.text.splitlines()
        if self.lang == "console":  # "$ cmd" (or "host$ cmd"); a "\" line continues into the next
            kept, more = [], False
            for x in lines:
                m = re.match(r"^(?:[\w.-]+)?\$ (.*)$", x)
                if m or more:
                    kept.append(m.group(1) if m else x)
                    more = kept[-1].rstrip().endswith("\\")
            lines = kept
        out: list[str] = []
        for x in lines:
            if out and out[-1].endswith("\\"):
                out[-1] = out[-1][:-1] + " " + x.strip()
            elif x.strip() and not x.lstrip().startswith("#"):
                out.append(x)
        return out

    def python(self) -> str:
        """The block's code; pycon prompts stripped and output lines dropped."""
        if self.lang != "pycon":
            return self.text
        code = []
        for x in self.text.splitlines():
            if x.startswith(">>> ") or x == ">>>":
                code.append(x[4:])
            elif x.startswith("... ") or x == "...":
                code.append(x[4:])
        return "\n".join(code) + "\n"


def _marks(text: str) -> dict[str, str]:
    """``needs site; own-cluster; setup: CODE`` -> marks; setup comes last and takes the rest."""
    marks = {}
    text, _, setup = text.partition("setup:")
    if setup.strip():
        marks["setup"] = setup.strip().replace("\\n", "\n")
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, value = part.partition(" ")
        marks[name] = value.strip()
    return marks


def blocks(page: Path) -> list[Block]:
    out: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2), i + 1
        marks: dict[str, str] = {}
        j = i - 1
        while j >= 0 and (mark := _MARK.match(lines[j].strip())):
            marks.update(_marks(mark.group(1)))
            j -= 1
        body = []
        i += 1
        while i < len(lines) and not re.match(rf"^{re.escape(indent)}```\s*$", lines[i]):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        lang = {"bash": "sh", "shell": "sh"}.get(lang, lang)
        out.append(Block(page, start, lang, "\n".join(body) + "\n", marks))
        i += 1
    return out


def all_blocks() -> list[Block]:
    return [b for page in PAGES for b in blocks(page)]
