#!/usr/bin/env bash
# A two-node dbdetect run on Ray: a head node and one worker node, then
# `dbdetect detect --ray` writes Parquet shards with every image's polygons.
#
#   examples/ray_two_nodes.sh IMAGES_DIR OUT_DIR [PORT]
#
#   HEAD_IP=10.0.0.1 examples/ray_two_nodes.sh IMAGES_DIR OUT_DIR
#
# On a real cluster, run the first `ray start` on the head machine and the
# second on each worker, with HEAD_IP set to the head's private address; the
# images, the model file (if not a bundled name) and OUT_DIR must be on storage
# that every node sees at the same path. As written, both nodes run on the machine
# that runs the script. HEAD_IP has no default: a multi-node Ray binds its
# servers to every interface and (2.60, Linux) replaces 127.0.0.1 by the machine's
# network address, so give the head's private address. The tests run this script
# in a network namespace of its own (`unshare -rn`, HEAD_IP=127.0.0.2), whose only
# interface is a private loopback: see test_two_node_example.
#
# Security: a Ray cluster runs any code sent to its ports. Keep it on
# 127.0.0.1 or a private network behind a firewall, never on a public address.
# Recent Ray versions add token authentication (RAY_AUTH_MODE=token): the head
# creates ~/.ray/auth_token if missing; copy that file to every worker node
# (or set RAY_AUTH_TOKEN there). Older versions have no authentication at all.
set -euo pipefail
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
export RAY_USAGE_STATS_ENABLED=0  # no usage reports
IMAGES=$1
OUT=$2
PORT=${3:-6390}
HEAD_IP=${HEAD_IP:?set HEAD_IP to the private address of the head node}
ADDRESS="$HEAD_IP:$PORT"
# Private session files, so this cluster does not touch another one on the machine.
TMP=${RAY_EXAMPLE_TMP:-$(mktemp -d /tmp/dbdray.XXXX)}
COMMON=(--node-ip-address "$HEAD_IP" --num-cpus 1 --disable-usage-stats --temp-dir "$TMP" --block)

# --block keeps each node in the foreground, so it is stopped by its own PID
# (`ray stop` would stop every Ray process of this user on the machine).
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT

ray start --head --port "$PORT" --include-dashboard false "${COMMON[@]}" > "$TMP/head.log" 2>&1 &
pids+=($!)
for _ in $(seq 30); do ray status --address "$ADDRESS" > /dev/null 2>&1 && break; sleep 1; done

ray start --address "$ADDRESS" "${COMMON[@]}" > "$TMP/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 30); do
  [ "$(ray status --address "$ADDRESS" 2>/dev/null | grep -c ' node_')" -ge 2 ] && break
  sleep 1
done
ray status --address "$ADDRESS" | grep -c ' node_' | xargs echo "nodes up:"

# One detector actor per node (1 CPU each); extra options go to `dbdetect detect`.
"${PYTHON:-python}" -m dbdetect detect --ray "$ADDRESS" "$IMAGES" --out "$OUT" --workers 2 "${@:4}"
