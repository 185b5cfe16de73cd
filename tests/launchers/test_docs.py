"""The docs' config snippets and template example must work, and every key is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

from hpcpar.config import load_config, schema
from hpcpar.config.validate import validate_table
from hpcpar.launchers.build import render_cluster
from hpcpar.paths import ProfileDir

DOCS = Path(__file__).resolve().parents[2] / "docs"


def toml_blocks(name: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", (DOCS / name).read_text(), re.DOTALL)


@pytest.mark.parametrize("name", ["site-admin.md", "launchers.md"])
def test_every_toml_snippet_is_valid_config(name: str) -> None:
    blocks = toml_blocks(name)
    assert blocks or name == "launchers.md"
    for block in blocks:
        _, problems = validate_table(tomllib.loads(block), f"{name} snippet", allow_profiles=True)
        assert problems == [], block


def test_site_examples_render_for_each_profile(site_dir: Path) -> None:
    for i, block in enumerate(toml_blocks("site-admin.md")[:5]):
        if "[cluster]" not in block:
            continue
        (site_dir / f"{i}.toml").write_text(block)
        for profile in ["default", *tomllib.loads(block).get("profiles", {})]:
            config = load_config(profile, {"cluster.n": 8})
            jobs = render_cluster(config, ProfileDir.for_profile(profile))
            assert jobs and jobs[-1].role == "engines"
        (site_dir / f"{i}.toml").unlink()


def test_template_override_example_renders(site_dir: Path) -> None:
    text = (DOCS / "site-admin.md").read_text()
    template = re.search(r"```\w*\n(\{# /etc/hpcpar/templates/slurm/directives.j2 #\}\n.*?)```", text, re.DOTALL).group(1)
    (site_dir / "site.toml").write_text('[controller]\nip = "*"\n[cluster]\nengines = "slurm"\n')
    (site_dir / "templates" / "slurm").mkdir(parents=True)
    (site_dir / "templates" / "slurm" / "directives.j2").write_text(template)
    [job] = render_cluster(load_config(overrides={"n": 4, "walltime": "2-00:00:00"}), ProfileDir.for_profile("d"))
    assert "#SBATCH --qos=long\n" in job.script and "#SBATCH --array=1-4\n" in job.script


def test_launcher_docs_list_every_key() -> None:
    text = (DOCS / "launchers.md").read_text()
    sections = re.split(r"^### \[", text, flags=re.MULTILINE)
    documented = {}
    for part in sections[1:]:
        name, _, body = part.partition("]")
        documented[name] = set(re.findall(r"^\| `(\w+)` \|", body, re.MULTILINE))
    for key in schema().values():
        assert key.name in documented.get(key.section, set()), f"{key.dotted} missing from docs/launchers.md"
