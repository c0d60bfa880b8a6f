"""The read side (`devline observe`): projections of the logs, served over HTTP.

`projection` (plans folded with the pipeline's fold, live workers; pure), `windows` (raw
metric points into closed window records; pure), `prom` (the Prometheus figures),
`service` (the Kafka edge), `web` (aiohttp routes), `ws` (the WebSocket hub).
"""
