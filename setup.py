"""Only here to ship the top-level templates/ directory as the package hpcpar.templates.

pyproject.toml cannot list found packages and one mapped package together.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["hpcpar", "hpcpar.*"]), "hpcpar.templates"],
    package_dir={"hpcpar.templates": "templates"},
)
