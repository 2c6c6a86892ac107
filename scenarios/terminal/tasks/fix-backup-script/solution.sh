#!/bin/bash
cat > /app/backup.sh <<'SCRIPT'
#!/bin/bash
# Copy every .log file of $1 into $2 and print how many were copied.
src=$1
dst=$2
mkdir -p -- "$dst"
count=0
for f in "$src"/*.log; do
    [ -f "$f" ] || continue
    cp -- "$f" "$dst/"
    count=$((count + 1))
done
echo "$count"
SCRIPT
chmod +x /app/backup.sh
