#!/usr/bin/env bash
# The README walk-through: one agent session driven with curl.
# session → edit → test → edit → test → submit, printing what the agent sees.
# Usage: scripts/walkthrough.sh [BASE_URL]   (default http://127.0.0.1:8000)
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:-http://127.0.0.1:8000}
text() { python3 -c 'import json, sys; print(json.load(sys.stdin)["text"])'; }

# 1. Start a session; the reply holds the token, the task description and the tools.
curl -sf -X POST "$BASE/sessions" -H 'Content-Type: application/json' \
     -d '{"task": "llm-pretrain-loss", "agent": "curl-walkthrough"}' > /tmp/lossgym-session.json
TOKEN=$(python3 -c 'import json; print(json.load(open("/tmp/lossgym-session.json"))["token"])')
AUTH="Authorization: Bearer $TOKEN"
echo "=== session $(python3 -c 'import json; print(json.load(open("/tmp/lossgym-session.json"))["session_id"])')"

# 2. Replace compute_loss (editable region 1) with PolyLoss + label smoothing + z-loss.
echo "=== edit"
curl -s -X POST "$BASE/edit" -H "$AUTH" -H 'Content-Type: application/json' \
     -d @examples/edit_polyloss.json | text

# 3. Run test #1: real training on the tiny-cpu profile (about 2 minutes on 2 cores).
echo "=== test"
curl -s -X POST "$BASE/test" -H "$AUTH" | text

# 4. Try a second idea: softcapping + label smoothing + z-loss, and test it.
echo "=== edit"
curl -s -X POST "$BASE/edit" -H "$AUTH" -H 'Content-Type: application/json' \
     -d @examples/edit_softcap.json | text
echo "=== test"
curl -s -X POST "$BASE/test" -H "$AUTH" | text

# 5. Submit test #1 as the final result.
echo "=== submit"
curl -s -X POST "$BASE/submit" -H "$AUTH" -H 'Content-Type: application/json' \
     -d '{"n": 1}' | text
