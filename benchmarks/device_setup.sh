# Source from the repository root on the device machine (docs/gpu.md): makes loopcoder.* importable
# from this checkout and installs the carried wheels (.whl/) into /tmp/site.
mkdir -p /tmp/ns/loopcoder && for d in agent tools runtime model_server scenarios configs; do
  ln -sfn "$PWD/$d" "/tmp/ns/loopcoder/$d"; done
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/ns:/tmp/site PYTHONUNBUFFERED=1
