"""How often the teacher locates the bug with knowledge the student never sees (docs/nano.md).

For each trajectory with an edit: the first locating action (search, find_definition, repo_map, or a view /
outline of the file it later edits) is "seen" when every symbol or path it names occurs in the task text or
an earlier tool result, "unseen" otherwise. Prints JSON.

    python benchmarks/nano_grounding.py /work/nanodata/traj/trajectories > benchmarks/results/nano-grounding.json
"""
import json, glob, collections, sys
tot = grounded = 0
why = collections.Counter()
for f in glob.glob(sys.argv[1] + '/**/*.jsonl', recursive=True):
    ev = [json.loads(l) for l in open(f)]
    edits = [e for e in ev if e['type'] == 'tool_call' and e['name'] == 'str_replace']
    if not edits:
        continue
    path = edits[-1]['arguments']['path']
    seen = ''
    for e in ev:
        if e['type'] == 'model_request':
            for m in e['new_messages']:
                if m['role'] in ('user', 'tool'):
                    seen += str(m.get('content'))
        if e['type'] == 'tool_call':
            a = e['arguments'] or {}
            if e['name'] == 'search': syms = [a['pattern'].replace('def ', '')]
            elif e['name'] == 'find_definition': syms = [a['symbol'].split('.')[-1]]
            elif e['name'] == 'repo_map': syms = a.get('mentioned_symbols', [])
            elif e['name'] in ('view', 'outline') and a.get('path') == path: syms = [path]
            else: continue
            tot += 1
            ok = all(s in seen for s in syms)
            grounded += ok
            why[e['name'], ok] += 1
            break
print(json.dumps({"episodes": tot, "grounded": grounded, "share": round(grounded / tot, 3),
                  "first_locating_action": {f"{k[0]} {'seen' if k[1] else 'unseen'}": v for k, v in sorted(why.items())}}))
