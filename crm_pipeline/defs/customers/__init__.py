"""The customers domain: the resolved customer base, its checks and the file import job."""
