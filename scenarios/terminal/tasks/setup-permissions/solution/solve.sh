#!/bin/bash
set -e
cd /srv/site
chmod 750 bin/start.sh
mkdir -p private && chmod 700 private
mv ./*.key private/
ln -sfn releases/v2 current
