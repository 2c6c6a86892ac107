#!/bin/bash
# Copy every .log file of $1 into $2 and print how many were copied.
src=$1
dst=$2
count=0
for f in $(ls $src | grep '\.log$'); do
    cp $src/$f $dst/
    count=$((count + 1))
done
echo $count
