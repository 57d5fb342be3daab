"""Step 3, parallel evaluation: incumbent and candidates over the golden set, and a verdict.

prompts.py   prompt variants: how an item becomes messages and parameters
matrix.py    contenders × variants × items, cut into shards
run.py       the run's Prefect tasks: contenders from the plan, shards, tuning, storing, scoring
scoring.py   a scorer per task type (accuracy/P/R/F1, ROUGE, exact match, JSON shapes)
batch.py     provider batch jobs (files + batches API): submit, reconcile, collect, exactly once
judge.py     LLM-as-judge: pairwise and rubric scorers, their statistics, calibration before trust
decision.py  quality gates → migrate, keep or inconclusive, with the evidence
progress.py  items done per phase and model, errors, cost so far, ETA (CLI display, Prefect artifact)
report.py    the verdict in markdown and the self-contained HTML report
viewer.py    the per-item viewer: every test item, answer by answer, with filters and search
export.py    the run's answers as Inspect AI eval logs
"""
