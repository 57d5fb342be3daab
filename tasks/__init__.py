"""The playbook's work, one folder per step, and what several steps share.

audit/     1 logs → canonical usage table, spend per month, workhorse/frontier, savings projections
golden/    2 sources → PII scrub → dedup → contract → versioned golden sets
evaluate/  3 contenders × prompt variants × items, scores, the verdict and its reports
rollout/   4 the rollout state machine, guardrails, traffic simulation, LiteLLM export
monitor/   5 windows of live traffic → rules → incidents → Slack alerts
common/    the model runner, the vLLM engine, the traffic log, data contracts, prices, HTML
"""
