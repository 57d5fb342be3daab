"""The playbook's flows, one file per step: each reads as the step's outline and only wires tasks.

audit.py      1 usage audit            golden.py     2 golden dataset refresh
evaluate.py   3 parallel evaluation    rollout.py    4 staged rollout (one control-loop run)
monitor.py    5 monitoring             reevaluate.py golden refresh + evaluation, weekly
playbook.py   steps 1-3 in order for one plan (the demo in examples/acme/ calls it)
"""
