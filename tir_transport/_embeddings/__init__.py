"""Internal: the embeddings API (import from `tir_transport`, not from here).

`wire` the wire format (no I/O), `client` the client.
"""
