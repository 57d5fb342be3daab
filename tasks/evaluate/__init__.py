"""Step 3, parallel evaluation: incumbent and candidates over the golden set, and a verdict.

prompts.py   prompt variants: how an item becomes messages and parameters
matrix.py    contenders × variants × items, cut into shards
run.py       the run's Prefect tasks: contenders from the plan, shards, tuning, storing, scoring
scoring.py   a scorer per task type (accuracy/P/R/F1, ROUGE, exact match, JSON shapes)
decision.py  quality gates → migrate, keep or inconclusive, with the evidence
report.py    the verdict in markdown and the self-contained HTML report
"""
