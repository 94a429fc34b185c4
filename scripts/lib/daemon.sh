# Shared by the emulator scripts (azure.sh, gcs.sh, pubsub.sh, moto.sh): a server process per port, its pid in a file.
# Sourced, not run. The script sourcing it defines die().

# daemon_kill PID: TERM, up to 5 s for it to go, then KILL.
daemon_kill() {
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$1" 2>/dev/null || true
}

# daemon_watch_owner NAME OWNER SERVER SCRIPT [VAR=VALUE...]: in the background, once process OWNER has exited
# while SERVER still runs, runs `SCRIPT stop` with the VARs set (the port and such). For test sessions killed
# before their teardown. NAME is the variable OWNER came from, for the error message.
daemon_watch_owner() {
    local name=$1 owner=$2 server=$3 script=$4
    shift 4
    [[ $owner =~ ^[0-9]+$ ]] || die "$name must be a process id, got '$owner'"
    env "$@" setsid nohup bash -c \
        'while kill -0 "$1" && kill -0 "$2"; do sleep 2; done 2>/dev/null; kill -0 "$2" 2>/dev/null && exec bash "$3" stop' \
        watch "$owner" "$server" "$script" </dev/null >/dev/null 2>&1 &
}
