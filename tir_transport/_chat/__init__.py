"""Internal: the chat-completions API (import from `tir_transport`, not from here).

`wire` the wire format (no I/O), `client` the client; `negotiate` the endpoint's fallbacks,
with `tools` the tool prompt format, `tool_stream` the stream filter and `structured` the
structured-output fallbacks.
"""
