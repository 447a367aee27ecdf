"""The folders the import and export jobs may read and write, and paths confined to them.

A Dagster run's config comes from whoever can launch a run in the UI, so a path in it must not
reach the rest of the machine (an import of /etc/shadow lands in quarantine rows; an export can
overwrite any file the process may write). The roots come from the process environment, not from
run or resource config, because Dagster lets a run's config override resource values, even those
bound in the Definitions. The CLI is a person at their own shell and takes any path
(docs/search.md#paths).
"""

from __future__ import annotations

import os
from pathlib import Path

from crm_pipeline.settings import crm_home, exports_dir

IMPORTS_ENV = "CRM_IMPORTS_DIR"
EXPORTS_ENV = "CRM_EXPORTS_DIR"


class PathOutsideRoot(ValueError):
    """A job path that climbs out of its folder with '..' or resolves outside it."""


def import_root() -> Path:
    """Where the `import_customers` job reads: $CRM_IMPORTS_DIR, else CRM_HOME/imports."""
    return _root(os.environ.get(IMPORTS_ENV) or crm_home() / "imports")


def export_root() -> Path:
    """Where the `export_customers` job writes: $CRM_EXPORTS_DIR, else CRM_HOME/exports."""
    return _root(os.environ.get(EXPORTS_ENV) or exports_dir())


def _root(path: str | Path) -> Path:
    root = Path(path).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def confine(requested: str | Path, root: Path, setting: str) -> Path:
    """`requested` (relative to `root`, or absolute) resolved, if it stays inside `root`.

    Any '..' is refused outright; symlinks are followed and must end inside the root too.
    """
    path = Path(requested)
    where = f"the folder {root} ({setting}, default under CRM_HOME)"
    if ".." in path.parts:
        raise PathOutsideRoot(f"{requested}: '..' is not allowed; give a path inside {where}")
    resolved = (root / path).resolve()  # an absolute `path` replaces `root` here
    if resolved == root or not resolved.is_relative_to(root):
        raise PathOutsideRoot(f"{requested} resolves to {resolved}, which is not inside {where}")
    return resolved


def import_path(requested: str | Path) -> Path:
    """A file for the import job to read, confined to import_root()."""
    return confine(requested, import_root(), IMPORTS_ENV)


def export_path(requested: str | Path) -> Path:
    """A file for the export job to write, confined to export_root()."""
    return confine(requested, export_root(), EXPORTS_ENV)
