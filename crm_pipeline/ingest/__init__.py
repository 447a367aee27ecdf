"""Loading mapped records into PostgreSQL: validate, quarantine, resolve identity, merge."""
