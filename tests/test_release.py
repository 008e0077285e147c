"""What others need to reuse and cite the suite: a licence pip knows, a citation file naming the suite
and the paper, and one version everywhere, logged in the changelog."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

import hdml

ROOT = Path(__file__).resolve().parent.parent


def test_one_version_in_pyproject_package_citation_and_changelog():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    newest = re.search(r"^## (\S+) \(", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert newest is not None, "CHANGELOG.md: no '## VERSION (date)' entry"
    assert hdml.__version__ == version == str(citation["version"]) == newest.group(1)


def test_the_licence_is_declared_and_shipped():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_the_citation_names_the_suite_and_the_paper_it_reproduces():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software"
    paper = citation["preferred-citation"]
    assert paper["title"] == "Hardness-Aware Deep Metric Learning" and paper["year"] == 2019
    assert [a["family-names"] for a in paper["authors"]] == ["Zheng", "Chen", "Lu", "Zhou"]
    assert citation["license"] == "MIT"
