-- Runs once, when the PostgreSQL container starts on an empty volume (deploy/compose.yaml):
-- Dagster's run and event storage gets its own database beside the CRM's.
CREATE DATABASE dagster;
