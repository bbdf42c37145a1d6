#!/usr/bin/env bash
# The system parts the test suite uses, for every user (make test) as for CI (.ci/run):
#   chromium       the UI tests in headless Chromium        (marker: browser)
#   redis-server   the multi-host lock manager's tests      (marker: redis)
#   postgresql     the PostgreSQL-backed server's tests     (marker: postgres)
# A missing part is installed with apt when this user can (root, or sudo without a password).
# When it cannot be, nothing fails here: the script lists exactly which tests will skip and why.
# PY names the Python of the venv (make passes it); used only to list the tests that will skip.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

has_postgres() {
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
has() {  # has PART
  case "$1" in
    chromium) command -v chromium >/dev/null 2>&1 ;;
    redis-server) command -v redis-server >/dev/null 2>&1 ;;
    postgresql) has_postgres ;;
  esac
}
marker_of() {
  case "$1" in chromium) echo browser ;; redis-server) echo redis ;; postgresql) echo postgres ;; esac
}

missing=()
for part in chromium redis-server postgresql; do
  has "$part" || missing+=("$part")
done
[ ${#missing[@]} -eq 0 ] && { echo "system parts: chromium, redis-server, postgresql present"; exit 0; }

can=0 runner=""
if [ "$(id -u)" -eq 0 ]; then
  can=1
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  can=1 runner="sudo -n"
fi
if [ "$can" -eq 1 ] && command -v apt-get >/dev/null 2>&1; then
  echo "system parts: installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if $runner apt-get update -qq && $runner apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    still=()
    for part in "${missing[@]}"; do has "$part" || still+=("$part"); done
    missing=("${still[@]+"${still[@]}"}")
  else
    echo "system parts: apt-get failed (no network to the Debian mirror?)"
  fi
  [ ${#missing[@]} -eq 0 ] && { echo "system parts: all present"; exit 0; }
else
  echo "system parts: cannot install ${missing[*]} (needs apt-get, and root or sudo without a password)"
fi

for part in "${missing[@]}"; do
  marker=$(marker_of "$part")
  echo "system parts: $part is missing: these tests (marker '$marker') will skip; install it with: apt-get install $part"
  "$PY" -m pytest -q -p no:cacheprovider --collect-only -m "$marker" 2>/dev/null | grep '::' | sed 's/^/  skip: /'
done
exit 0
