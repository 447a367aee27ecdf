"""Row building, one module per sender: a verified request's headers and body become the
`EventRow`s to land (see `common.RowBuilder`). The routes table is in routes/webhooks.py."""
