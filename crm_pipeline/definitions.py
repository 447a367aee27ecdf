"""The one code location: whatever the domains under crm_pipeline/defs register, found by dg.

Each domain folder holds its own assets, checks, jobs, schedules and sensors; the shared
resources are bound in crm_pipeline/defs/resources.py. Nothing here names a domain.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import dagster as dg

import crm_pipeline.defs
from crm_pipeline.defs.resources import resources

__all__ = ["build_definitions", "defs", "resources"]

# The folder holding the crm_pipeline package: the repository root in a checkout or an editable
# install, where pyproject.toml's [tool.dg] names the project; site-packages in a wheel install.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def build_definitions() -> dg.Definitions:
    """Every definition under crm_pipeline/defs, merged."""
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        return dg.load_from_defs_folder(path_within_project=PROJECT_ROOT)
    # A wheel ships no pyproject.toml: the same loader, told the defs module directly (quietly,
    # as load_from_defs_folder is about the preview functions it calls).
    tree = dg.ComponentTree.from_module(defs_module=crm_pipeline.defs, project_root=PROJECT_ROOT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return tree.build_defs()


defs = build_definitions()
