"""The pipeline domain: jobs and schedules over every domain's assets (full and incremental)."""
