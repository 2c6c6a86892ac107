#!/bin/bash
set -e
cd /app/repo
lost=$(git reflog --format=%H | while read -r c; do
    if git cat-file -e "$c:secret.txt" 2>/dev/null; then echo "$c"; break; fi
done)
git show "$lost:secret.txt" > /app/recovered.txt
