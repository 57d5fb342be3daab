"""workhorse: move routine LLM workloads from closed to open models, safely and measurably."""

import os

# LiteLLM fetches its price map from the internet on import unless told otherwise; the
# bundled map is what every cost figure is computed from, so it must be the one in use.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# Prefect's analytics thread causes "database is locked" tracebacks on the SQLite server.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("LITELLM_TELEMETRY", "False")

__version__ = "0.1.0"
