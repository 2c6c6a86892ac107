#!/bin/bash
awk '{print $(NF-1)}' /app/access.log | sort -n | uniq -c | awk '{print $2, $1}' > /app/report.txt
