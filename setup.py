"""Only here to ship the top-level templates/ directory as the package hpcpar.templates.

pyproject.toml cannot list found packages and one mapped package together.
Each templates/<system>/ directory is listed as a (data-only) package so
setuptools ships it without warnings.
"""

from pathlib import Path

from setuptools import find_packages, setup

TEMPLATE_DIRS = sorted(p.name for p in Path(__file__).parent.joinpath("templates").iterdir() if p.is_dir())

setup(
    packages=[
        *find_packages(include=["hpcpar", "hpcpar.*"]),
        "hpcpar.templates",
        *(f"hpcpar.templates.{name}" for name in TEMPLATE_DIRS),
    ],
    package_dir={"hpcpar.templates": "templates"},
)
