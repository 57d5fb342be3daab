"""Step 2, golden dataset refresh: versioned evaluation sets per use case.

item.py      the golden_item record: schema, id, split
sources.py   where items come from: logged traffic, label files, promptfoo / OpenAI Evals suites
pii.py       PII scrubbing (emails, phones, cards, IBANs) before anything is stored
clean.py     scrub, exact and near-duplicate removal
versions.py  immutable vN.parquet sets and their manifests
refresh.py   the step's task: sources → clean → contract → new version
"""
