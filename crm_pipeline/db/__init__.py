"""Database access: the embedded server, engines, migrations and the set-based upsert helpers."""
