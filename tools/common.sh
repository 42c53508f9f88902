# shellcheck shell=bash
# Messages, progress and failures for ./run.

export SID_T0=${SID_T0:-$(date +%s)}

elapsed() { echo "$(( $(date +%s) - SID_T0 ))s"; }
step() { printf '==> [%s] %s\n' "$(elapsed)" "$*"; }
note() { printf '    %s\n' "$*"; }

# die STEP WHAT HOW: stop, saying which step failed, what went wrong and how to retry.
die() {
    printf '\nERROR while %s: %s\n' "$1" "$2" >&2
    printf 'To retry: %s\n' "${3:-run the same ./run command again}" >&2
    exit 1
}

# run_logged STEP LOG CMD...: run CMD with its output in LOG, printing a progress
# line every 15 s (the last line of the log); on failure show the log's tail.
run_logged() {
    local what=$1 log=$2; shift 2
    mkdir -p "$(dirname "$log")"
    "$@" >"$log" 2>&1 &
    local pid=$! t=0 rc=0
    # shellcheck disable=SC2064
    trap "kill $pid 2>/dev/null" INT TERM
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        t=$((t + 1))
        if [ $((t % 15)) = 0 ]; then
            printf '    ... %s: %ss, %s\n' "$what" "$t" "$(tail -n1 "$log" | cut -c1-100)"
        fi
    done
    wait "$pid" || rc=$?
    trap - INT TERM
    if [ "$rc" != 0 ]; then
        printf '\n--- last lines of %s ---\n' "$log" >&2
        tail -n 30 "$log" >&2
        die "$what" "the command failed with exit code $rc (full log: $log)" \
            "fix the cause shown above, then run the same ./run command again; it resumes where it stopped"
    fi
}
