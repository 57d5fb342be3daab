"""Step 1, usage audit: what the company spends on closed models, and what it could save.

usage.py         log adapters (app JSONL, LiteLLM spend CSV, OpenAI usage) → the canonical usage_log table
spendlogs_db.py  LiteLLM proxy spend logs read straight from its PostgreSQL database
repeats.py       the compiled inner loop of the duplicate-id check
assessment.py    billed months, run-rate, workhorse or frontier, realtime or batch, cost per candidate
"""
