"""Packaging that pyproject.toml cannot express: the top-level sql/ folder ships in the wheel.

sql/ stays the one source of the migrations at the repo root; setuptools maps it to the
package data folder crm_pipeline/sql, so `pip install .` (not editable) can still run
`crm-pipeline db migrate` (crm_pipeline/db/migrate.py finds either copy).
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["crm_pipeline*", "webhook_receiver*"]), "crm_pipeline.sql"],
    package_dir={"crm_pipeline.sql": "sql"},
    package_data={
        "crm_pipeline.sql": ["*.sql"],
        "crm_pipeline.shopify_admin_schema": ["*.json.gz", "LICENSE", "README.md"],
    },
)
