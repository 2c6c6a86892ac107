"""How many teacher episodes name something their prompt never showed (docs/nano.md, "Grounding").

For every kept trajectory under DIR: each tool call's paths, test ids, symbols, search patterns and edited
lines are looked up in the prompt of that very request (scenarios/nano/grounding.py, the rule `nano teach`
filters with). Prints JSON: episodes, grounded episodes, and per tool the calls that named unseen things.

    python benchmarks/nano_grounding.py /work/nanodata/traj/trajectories > benchmarks/results/nano-grounding.json
"""
import collections
import glob
import json
import sys

from loopcoder.scenarios.nano.grounding import episode_grounding

files = sorted(glob.glob(sys.argv[1] + "/**/*.jsonl", recursive=True))
episodes = grounded = 0
calls, unseen = collections.Counter(), collections.Counter()
examples: dict[str, list] = {}
for f in files:
    rows = episode_grounding(f)
    episodes += 1
    grounded += not any(r["missing"] for r in rows)
    for r in rows:
        calls[r["tool"]] += 1
        if r["missing"]:
            unseen[r["tool"]] += 1
            examples.setdefault(r["tool"], [])
            if len(examples[r["tool"]]) < 2:
                examples[r["tool"]].append(r["missing"][0])
print(json.dumps({"command": "python benchmarks/nano_grounding.py " + sys.argv[1], "episodes": episodes,
                  "grounded_episodes": grounded, "share": round(grounded / max(episodes, 1), 3),
                  "calls_naming_unseen_things": {t: f"{unseen[t]} of {calls[t]}" for t in sorted(calls)},
                  "examples": examples}, indent=1))
