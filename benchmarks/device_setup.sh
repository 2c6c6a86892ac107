# Source from the repository root on the device machine (docs/gpu.md): makes loopcoder.* importable
# from this checkout and installs the carried wheels (.whl/) into /tmp/site.
# One namespace folder per checkout, so two trees (e.g. a baseline copy) can be measured in one call.
NS=/tmp/ns-$(basename "$PWD")
mkdir -p "$NS/loopcoder" && for d in agent tools runtime model_server scenarios configs; do
  ln -sfn "$PWD/$d" "$NS/loopcoder/$d"; done
# Two scripts sourcing this at once (runs side by side) would both write /tmp/site: one installs at a time.
if ls .whl/*.whl >/dev/null 2>&1; then
  (
    command -v flock >/dev/null && flock 9
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  ) 9>/tmp/site.lock
fi
export PYTHONPATH=$NS:/tmp/site PYTHONUNBUFFERED=1
