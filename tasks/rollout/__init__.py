"""Step 4, staged rollout: shift live traffic step by step, revert when a guardrail breaks.

state.py           the rollout state machine of a use case (weights, steps, history, revert notifiers)
guardrails.py      the analysis of one step: candidate against incumbent on the traffic log
report.py          the rollout's markdown artifact
litellm_export.py  the weights as a LiteLLM Router/Proxy config
gateway.py         the LiteLLM proxy plugin: routes, logs and breaks circuits where the traffic flows
replicas.py        which proxy replicas serve a use case, on which weights version (their heartbeats)
traffic_sim.py     replayed traffic through the router, paced to the engine (demo and tests)
"""
