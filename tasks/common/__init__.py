"""What several steps share.

runner.py       one async runner for every model call (retries, cache, checkpoints, circuit breaker)
limits.py       per-endpoint limits: adaptive concurrency (AIMD on 429), requests and tokens per minute
http_path.py    the lean path for OpenAI-compatible endpoints: one pooled HTTP session per endpoint
throughput.py   requests/s, tokens/s and client vs endpoint time of a block of work
engines.py      the self-hosted engine: vLLM serving or batching the embedded model
traffic_log.py  the traffic log: one row per routed call, in the state store
contracts.py    data contracts: check a table, quarantine bad rows
pricing.py      the price catalog and cost projections per hosting strategy
html.py         self-contained HTML and markdown report sections
"""
