"""Only here to ship the top-level templates/ directory as the package hpcpar.templates.

pyproject.toml cannot list found packages and one mapped package together.
Each templates/<system>/ directory is listed as a (data-only) package so
setuptools ships it without warnings.
"""

from pathlib import Path

from setuptools import find_packages, setup

TEMPLATE_DIRS = sorted(p.name for p in Path(__file__).parent.joinpath("templates").iterdir() if p.is_dir())

# Directories of data files inside hpcpar/ (no __init__.py): listed as data-only packages too,
# or setuptools warns that Python could import them but they are not packaged.
DATA_PACKAGES = ["hpcpar.dashboard.static"]

setup(
    packages=[
        *find_packages(include=["hpcpar", "hpcpar.*"]),
        *(p for p in DATA_PACKAGES if Path(__file__).parent.joinpath(*p.split(".")).is_dir()),
        "hpcpar.templates",
        *(f"hpcpar.templates.{name}" for name in TEMPLATE_DIRS),
    ],
    package_dir={"hpcpar.templates": "templates"},
)
