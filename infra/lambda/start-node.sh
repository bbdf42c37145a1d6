#!/usr/bin/env bash
# Start one node of a plantcad-flows GPU cluster: Ray, and on the head a Prefect process worker.
# Works on any SSH-reachable Linux VM with the repository checked out (SkyPilot runs it on Lambda
# Cloud from infra/lambda/cluster.sky.yaml).
#
#   start-node.sh --role head   [--pool lambda]          # Ray head + Prefect worker (foreground)
#   start-node.sh --role worker --head-address 10.0.0.5  # joins the head's Ray cluster (foreground)
#   start-node.sh --single-node [--pool lambda]          # no Ray daemon: a Prefect worker only; the
#                                                        # flow starts a local Ray if it needs one
# Options / environment:
#   --install            create $PLANTCAD_VENV and install the project (with the gpu extra if a
#                        GPU is present) before starting
#   PREFECT_API_URL      the Prefect server (required for head and single-node)
#   PLANTCAD_FLOWS_DIR   the checkout (default: two directories above this script)
#   PLANTCAD_VENV        virtualenv to use (default: $PLANTCAD_FLOWS_DIR/.venv, else python3 on PATH)
#   RAY_PORT             Ray GCS port on the head (default 6379)
#   WORKER_NAME          Prefect worker name (default: plantcad-<hostname>)
set -euo pipefail

ROLE=""
HEAD_ADDRESS="${HEAD_ADDRESS:-}"
POOL="${WORK_POOL:-lambda}"
INSTALL=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --role) ROLE="$2"; shift 2 ;;
    --head-address) HEAD_ADDRESS="$2"; shift 2 ;;
    --pool) POOL="$2"; shift 2 ;;
    --single-node) ROLE="single"; shift ;;
    --install) INSTALL=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "start-node.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$ROLE" in
  head|worker|single) ;;
  *) echo "start-node.sh: --role must be head or worker, or pass --single-node (got '${ROLE}')" >&2; exit 2 ;;
esac

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PLANTCAD_FLOWS_DIR="${PLANTCAD_FLOWS_DIR:-$(cd "$SCRIPT_DIR/../.." && pwd)}"
PLANTCAD_VENV="${PLANTCAD_VENV:-$PLANTCAD_FLOWS_DIR/.venv}"
RAY_PORT="${RAY_PORT:-6379}"

if [[ "$INSTALL" == 1 ]]; then
  extra=""
  command -v nvidia-smi >/dev/null 2>&1 && extra="[gpu]"
  [[ -x "$PLANTCAD_VENV/bin/python" ]] || python3 -m venv "$PLANTCAD_VENV"
  "$PLANTCAD_VENV/bin/pip" install -q -e "${PLANTCAD_FLOWS_DIR}${extra}"
fi
if [[ -x "$PLANTCAD_VENV/bin/python" ]]; then
  export PATH="$PLANTCAD_VENV/bin:$PATH"
fi
command -v prefect >/dev/null || { echo "start-node.sh: prefect not found; rerun with --install" >&2; exit 2; }

node_ip() { hostname -I 2>/dev/null | awk '{print $1}' || hostname; }
num_gpus() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L | grep -c '^GPU' || echo 0; }

start_prefect_worker() {
  if [[ -z "${PREFECT_API_URL:-}" ]]; then
    echo "start-node.sh: PREFECT_API_URL is not set (the Prefect server the worker polls)" >&2
    exit 2
  fi
  echo "start-node.sh: Prefect worker for pool '$POOL' -> $PREFECT_API_URL"
  cd "$PLANTCAD_FLOWS_DIR"
  # exec: the worker is this script's process, so stopping the script's PID stops the worker.
  exec prefect worker start --pool "$POOL" --type process --name "${WORKER_NAME:-plantcad-$(hostname)}"
}

case "$ROLE" in
  head)
    IP="$(node_ip)"
    ray start --head --node-ip-address "$IP" --port "$RAY_PORT" --num-gpus "$(num_gpus)" \
      --dashboard-host 127.0.0.1 --disable-usage-stats
    # Flow runs started by the worker join this cluster (RayConfig.address: auto).
    export RAY_ADDRESS="$IP:$RAY_PORT"
    start_prefect_worker
    ;;
  worker)
    [[ -n "$HEAD_ADDRESS" ]] || { echo "start-node.sh: --head-address is required for --role worker" >&2; exit 2; }
    exec ray start --address "$HEAD_ADDRESS:$RAY_PORT" --node-ip-address "$(node_ip)" \
      --num-gpus "$(num_gpus)" --disable-usage-stats --block
    ;;
  single)
    start_prefect_worker
    ;;
esac
