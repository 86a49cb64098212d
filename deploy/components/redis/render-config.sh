#!/bin/sh
# Run by the Redis pod's init container: writes what redis.conf includes, into $REDIS_RUN_DIR (an emptyDir):
#   users.acl     the `recsys` user (every password only as its SHA-256, never in clear) scoped to the
#                 services' keys and commands, and the default user disabled (no one logs in as it)
#   memory.conf   maxmemory: 3/4 of the container's memory limit; the rest is for the append-only file's
#                 rewrite (a fork), client buffers and fragmentation
# From the environment: REDIS_PASSWORD (the redis-auth Secret's `password`), REDIS_PREVIOUS_PASSWORD (its
# optional `previous-password`, still accepted while clients move to the new one), RECSYS_REDIS_PREFIX (the
# services' key prefix) and REDIS_MEMORY_LIMIT_MB (the redis container's memory limit).
set -eu

fail() {
    echo "render-config: $*" >&2
    exit 1
}

# The password goes into the clients' rediss:// URL as it is, so it must need no escaping.
check_password() {
    case "$2" in
        "") fail "$1 is empty: create the redis-auth Secret (deploy/SECURITY.md)" ;;
        *[!A-Za-z0-9._~-]*) fail "$1 holds characters a URL would need escaped: use letters, digits, . _ ~ -" ;;
    esac
    [ "${#2}" -ge 32 ] || fail "$1 is shorter than 32 characters"
}

sha256() {
    printf '%s' "$1" | sha256sum | cut -d' ' -f1
}

check_password REDIS_PASSWORD "${REDIS_PASSWORD:-}"
passwords="#$(sha256 "$REDIS_PASSWORD")"
if [ -n "${REDIS_PREVIOUS_PASSWORD:-}" ]; then
    check_password REDIS_PREVIOUS_PASSWORD "$REDIS_PREVIOUS_PASSWORD"
    passwords="$passwords #$(sha256 "$REDIS_PREVIOUS_PASSWORD")"
fi
prefix="${RECSYS_REDIS_PREFIX:-}"
case "$prefix" in
    "" | *[!A-Za-z0-9_.-]*) fail "RECSYS_REDIS_PREFIX=$prefix: use letters, digits, _ . - (a key pattern)" ;;
esac
limit_mb="${REDIS_MEMORY_LIMIT_MB:-}"
case "$limit_mb" in
    "" | *[!0-9]*) fail "REDIS_MEMORY_LIMIT_MB=$limit_mb is not a number of MiB" ;;
esac

out="${REDIS_RUN_DIR:-/run/redis}"
umask 077
# The default user is off: no connection can log in as it, so every one must AUTH as `recsys`. It keeps full
# permissions all the same, because Redis replays the append-only file's MULTI/EXEC blocks (every Lua
# script's writes) as the default user, and versions without redis/redis#14545 (7.4.2 among them) drop the
# ones it may not run: a restart would silently lose them.
# The services' user: reads and writes of their own keys, Lua scripts, MULTI/EXEC and connection set-up;
# nothing of @dangerous (KEYS, FLUSHALL, CONFIG, DEBUG, ACL, ...) and no pub/sub channels.
cat > "$out/users.acl" <<ACL
user default off resetpass ~* &* +@all
user recsys on $passwords resetkeys ~$prefix:* resetchannels -@all +@read +@write +@scripting +@transaction +@connection -@dangerous
ACL
echo "maxmemory $((limit_mb * 3 / 4))mb" > "$out/memory.conf"
