"""Step 5, monitoring: live traffic windows → metrics → rules → incidents → Slack.

rules.py      metrics of a window per use case and model, and the rules that judge them
incidents.py  incidents and pending deliveries: dedup, cooldown, escalation, resolution
alerts.py     Slack messages (Block Kit) and Prefect events
window.py     one monitoring window end to end
"""
