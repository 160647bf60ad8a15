#!/usr/bin/env bash
# shellcheck disable=SC2016  # $n, $i, $l in single quotes are jq variables
# Deploys the stack with Docker Compose and checks it end to end: the old
# Envoy + Flask stack's curl checks, then what scaling, Prometheus and TLS
# must do.
#
#  1. images: built from source by compose (needs a registry for the base
#     images) or seeded by deploy/seed-images.sh (no registry needed)
#  2. up; wait until every container is healthy and the proxy is LIVE
#  3. ports: 8080 and 8443 published, admin 9901 on 127.0.0.1 only, the
#     services none; TLS on 8443
#  4. the old stack's checks through the proxy (its single-quoted bodies)
#  5. scale to 5 film-service + 3 rating-service replicas and run them again:
#     the replicas of a service share its PostgreSQL database, so every
#     answer is the single-replica one (409 for a name that exists, 200 for
#     a film or rating that exists) whichever replica serves it
#  6. every replica serves and creates; N requests reach every film-service
#     replica; every film and rating created is read through every replica
#     (told apart by x-served-by); 50 concurrent POSTs of one name make one
#     film (one 201, 49 x 409)
#  7. Prometheus: up{job="frontend-proxy"} == 1, envoy_cluster_upstream_rq_total
#     has data, and DNS service discovery found every replica
#  8. scale down to 2 + 1 while requests run: none may fail
#  9. no container restarted; PostgreSQL stopped: 503 with a JSON error,
#     services unhealthy, then recovery by themselves when it is back;
#     `compose restart` of everything and `compose down` (volumes kept) +
#     `up` lose no record; every container stops on SIGTERM, in seconds
# Prints PASS/FAIL/INFO/WARN lines and a summary; exits 1 if a check failed.
# Always tears the stack down (`down -v`) unless --keep is given.
#
# Usage: ./verify.sh [--build | --seed] [--keep]
#   --build  build the images from source (`compose build`; needs a registry)
#   --seed   make them with deploy/seed-images.sh (cargo on this host, no registry)
#            Default: --build if `docker pull debian:bookworm-slim` works, else
#            --seed. Also VERIFY_IMAGES=build|seed.
#   --keep   leave the stack running; then manage it with `docker compose`
#            (or `docker-compose`) in this directory
# Needs: docker with `docker compose` or `docker-compose`, curl, jq; for
# --seed also cargo, debootstrap and openssl (run as root).
set -uo pipefail
cd "$(dirname "$0")" || exit 2

images=${VERIFY_IMAGES:-auto}
keep=0
for arg in "$@"; do
    case $arg in
        --build) images=build ;;
        --seed) images=seed ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '3,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "verify.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

HTTP=http://localhost:8080
HTTPS=https://localhost:8443
ADMIN=http://127.0.0.1:9901
PROM=http://localhost:9090
SCALE_FILM=5
SCALE_RATING=3
DOWN_FILM=2
DOWN_RATING=1
# The old stack's curl options, without --retry: the stack is ready before
# the checks start, and a retry would hide the failure a check looks for.
CURL=(curl -sS --connect-timeout 5 --max-time 10)

tmp=$(mktemp -d)
started=$SECONDS
passed=0
failed=0
warned=0
summary=()
bg_pids=()

say() { printf '%s\n' "$*"; }
pass() { passed=$((passed + 1)); say "PASS  $*"; }
fail() { failed=$((failed + 1)); summary+=("FAIL  $*"); say "FAIL  $*"; }
info() { say "INFO  $*"; }
warn() { warned=$((warned + 1)); summary+=("WARN  $*"); say "WARN  $*"; }
phase() { say ""; say "== $* ($((SECONDS - started))s)"; }
# check DESCRIPTION COMMAND...: PASS if the command succeeds, else FAIL.
check() {
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

# wait_for SECONDS COMMAND...: polls COMMAND every half second until it
# succeeds (0) or SECONDS have passed (1).
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            return 1
        fi
        sleep 0.5
    done
}

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    echo "verify.sh: needs \`docker compose\` or \`docker-compose\`" >&2
    exit 2
fi
for tool in curl jq docker; do
    command -v "$tool" >/dev/null || { echo "verify.sh: needs $tool" >&2; exit 2; }
done

finish() {
    local rc=$? pid
    for pid in "${bg_pids[@]}"; do kill "$pid" 2>/dev/null; done
    if [ "$failed" -gt 0 ] || [ "$rc" -ne 0 ]; then
        say ""
        say "== logs (last 30 lines per service)"
        "${compose[@]}" logs --no-color --tail=30 2>&1 | tail -n 300
    fi
    say ""
    if [ "$keep" = 1 ]; then
        say "== --keep: the stack is still up; stop it with: ${compose[*]} down -v"
    else
        local t0=$SECONDS
        timeout 120 "${compose[@]}" down -v --remove-orphans --timeout 10 >"$tmp/down.log" 2>&1 ||
            { cat "$tmp/down.log"; fail "${compose[*]} down -v"; }
        say "== torn down in $((SECONDS - t0))s (${compose[*]} down -v)"
    fi
    rm -rf "$tmp"
    say ""
    say "== summary: $warned warnings, in $((SECONDS - started))s (${compose[*]}, images: $images)"
    local line
    for line in "${summary[@]}"; do say "   $line"; done
    say "verify.sh: $passed passed, $failed failed"
    if [ "$failed" -gt 0 ] || [ "$rc" -ne 0 ]; then
        say "RESULT: FAIL"
        exit 1
    fi
    say "RESULT: PASS"
    exit 0
}
trap finish EXIT
trap 'exit 130' INT TERM

# Fatal: record the failure and stop (the EXIT trap tears down).
abort() {
    fail "$*"
    exit 1
}

# --- HTTP helpers ------------------------------------------------------------

# req METHOD PATH [CURL_ARGS...] against the proxy's HTTP listener; sets
# STATUS (000 when no answer), BODY and SERVED_BY (the x-served-by header).
req() {
    local method=$1 path=$2
    shift 2
    STATUS=$("${CURL[@]}" -X "$method" -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' "$@" \
        "$HTTP$path" 2>"$tmp/curl.err") || STATUS=000
    BODY=$(cat "$tmp/body" 2>/dev/null || true)
    SERVED_BY=$(awk 'tolower($1) == "x-served-by:" { sub(/\r$/, "", $2); print $2 }' "$tmp/headers" 2>/dev/null)
    : > "$tmp/body"
    : > "$tmp/headers"
}

# The old verify.sh's body: single-quoted pseudo-JSON sent with curl --data
# (so as application/x-www-form-urlencoded).
old_body() {
    printf "{\n\t\t'name': '%s',\n\t\t'language': '%s'\n\t}" "$1" "$2"
}

urlencode() { jq -rn --arg v "$1" '$v | @uri'; }

# jq_ok FILTER [ARGS...]: the filter holds for $BODY.
jq_ok() {
    local filter=$1
    shift
    jq -e "$@" "$filter" <<<"$BODY" >/dev/null 2>&1
}

short() { printf '%.120s' "$(tr -d '\n' <<<"$1")"; }

# --- compose helpers ---------------------------------------------------------

# Ids of the running containers of SERVICE.
running() {
    local id
    for id in $("${compose[@]}" ps -q "$1" 2>/dev/null); do
        [ "$(docker inspect -f '{{.State.Running}}' "$id" 2>/dev/null)" = true ] && echo "$id"
    done
}

# Hostnames (what x-served-by says) of SERVICE's running containers, sorted.
hostnames() {
    local id
    for id in $(running "$1"); do docker inspect -f '{{.Config.Hostname}}' "$id"; done | sort
}

# all_healthy SERVICE COUNT: exactly COUNT running containers, all healthy.
all_healthy() {
    local ids n=0 id
    ids=$(running "$1")
    for id in $ids; do
        [ "$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}healthy{{end}}' "$id")" = healthy ] || return 1
        n=$((n + 1))
    done
    [ "$n" -eq "$2" ]
}

wait_healthy() {
    local service=$1 count=$2 t0=$SECONDS
    if wait_for 120 all_healthy "$service" "$count"; then
        pass "$service: $count container(s) running and healthy ($((SECONDS - t0))s)"
    else
        abort "$service: $count container(s) healthy within 120s (running: $(running "$service" | wc -l))"
    fi
}

# --- 0. preflight ------------------------------------------------------------

phase "preflight"
say "compose: ${compose[*]} ($("${compose[@]}" version 2>/dev/null | head -n 1))"
if [ -n "$("${compose[@]}" ps -q 2>/dev/null)" ]; then
    info "a stack of this project is already up; taking it down first"
    timeout 120 "${compose[@]}" down -v --remove-orphans --timeout 10 >/dev/null 2>&1
fi
busy=()
for port in 8080 8443 9090 9901; do
    if ss -ltnH "sport = :$port" 2>/dev/null | grep -q .; then busy+=("$port"); fi
done
[ ${#busy[@]} -eq 0 ] || abort "host ports free for the stack: ${busy[*]} in use ($(ss -ltnpH | grep -E ":(${busy[*]// /|}) " | awk '{print $4, $6}' | tr '\n' ' '))"
pass "host ports 8080 8443 9090 9901 are free"

# --- 1. images ---------------------------------------------------------------

phase "images"
if [ "$images" = auto ]; then
    if timeout 60 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
        images=build
        info "a registry answers: building the images from source"
    else
        images=seed
        info "no registry answers (docker pull debian:bookworm-slim failed): seeding the images"
    fi
fi
t0=$SECONDS
case $images in
    build)
        timeout 3600 "${compose[@]}" build || abort "${compose[*]} build (within an hour)"
        ;;
    seed)
        timeout 3600 deploy/seed-images.sh --no-pull || abort "deploy/seed-images.sh (within an hour)"
        ;;
    *)
        abort "VERIFY_IMAGES must be auto, build or seed, not '$images'"
        ;;
esac
pass "images ready ($images, $((SECONDS - t0))s)"

# --- 2. up -------------------------------------------------------------------

phase "up"
t0=$SECONDS
# Waits for the services' health checks (depends_on: service_healthy).
timeout 300 "${compose[@]}" up -d --no-build || abort "${compose[*]} up -d (within 300s)"
info "up -d returned in $((SECONDS - t0))s"
wait_healthy postgres 1
wait_healthy rating-service 1
wait_healthy film-service 1
wait_healthy frontend-proxy 1
ready() { [ "$("${CURL[@]}" "$ADMIN/ready" 2>/dev/null)" = LIVE ]; }
check "admin $ADMIN/ready answers LIVE" wait_for 60 ready
films_ok() { req GET /films && [ "$STATUS" = 200 ]; }
check "GET $HTTP/films answers 200 through the proxy" wait_for 60 films_ok

# --- 3. ports and TLS --------------------------------------------------------

phase "ports and TLS"
proxy_id=$(running frontend-proxy | head -n 1)
check "admin port published on 127.0.0.1 only ($(docker port "$proxy_id" 9901/tcp | tr '\n' ' '))" \
    test "$(docker port "$proxy_id" 9901/tcp)" = "127.0.0.1:9901"
for port in 8080 8443; do
    check "port $port published ($(docker port "$proxy_id" "$port/tcp" | head -n 1))" \
        test -n "$(docker port "$proxy_id" "$port/tcp")"
done
for service in film-service rating-service postgres; do
    id=$(running "$service" | head -n 1)
    check "$service publishes no port" test -z "$(docker port "$id")"
done
tls_status=$("${CURL[@]}" -k -o /dev/null -w '%{http_code}' "$HTTPS/films" 2>"$tmp/curl.err") || tls_status=000
check "TLS: curl -k $HTTPS/films answers $tls_status" test "$tls_status" = 200
if docker cp "$proxy_id:/etc/frontend-proxy/tls/cert.pem" "$tmp/cert.pem" >/dev/null 2>&1; then
    verified=$("${CURL[@]}" --cacert "$tmp/cert.pem" -o /dev/null -w '%{http_code}' "$HTTPS/ratings" 2>"$tmp/curl.err") || verified=000
    check "TLS: the image's self-signed certificate verifies for localhost ($verified)" test "$verified" = 200
else
    info "TLS: no /etc/frontend-proxy/tls/cert.pem in the proxy container (own configuration?)"
fi

# --- 4 & 5. the old stack's checks -------------------------------------------

# Every replica of a service shares its database, so what is stored does not
# depend on the replica: STORED[name] = id of each film this script created;
# CREATED holds "id|name|host" (host: the replica that created it).
declare -A STORED=()
CREATED=()

# post_film NAME LANGUAGE: 201 with the film if no film is named NAME yet,
# else 409, whichever replica answers.
post_film() {
    local name=$1 language=$2
    req POST /films --data "$(old_body "$name" "$language")"
    if [ -z "$SERVED_BY" ]; then
        fail "POST /films '$name': $STATUS without x-served-by: $(short "$BODY")"
    elif [ -n "${STORED[$name]:-}" ]; then
        check "POST /films '$name' -> $STATUS from $SERVED_BY: 409 expected, it exists" test "$STATUS" = 409
    elif [ "$STATUS" = 201 ] && jq_ok '.name == $n and .language == $l and (.id | test("^[0-9a-f-]{36}$"))' \
        --arg n "$name" --arg l "$language"; then
        STORED[$name]=$(jq -r .id <<<"$BODY")
        CREATED+=("${STORED[$name]}|$name|$SERVED_BY")
        pass "POST /films '$name' -> 201 from $SERVED_BY, id ${STORED[$name]}"
    else
        fail "POST /films '$name' -> $STATUS from $SERVED_BY (201 expected): $(short "$BODY")"
    fi
}

# The films this script created, sorted, one per line.
stored_names() { printf '%s\n' "${!STORED[@]}" | sort; }

list_films() {
    req GET "/films?limit=1000"
    local want got
    want=$(stored_names)
    got=$(jq -r '.[].name' <<<"$BODY" 2>/dev/null | sort)
    if [ "$STATUS" = 200 ] && jq_ok 'type == "array"' && [ "$got" = "$want" ]; then
        pass "GET /films -> 200 from $SERVED_BY with all $(grep -c . <<<"$want") film(s)"
    else
        fail "GET /films -> $STATUS from $SERVED_BY; expected 200 with [$(tr '\n' ',' <<<"$want")]: $(short "$BODY")"
    fi
}

get_film() {
    local name=$1
    req GET "/films?name=$(urlencode "$name")"
    check "GET /films?name=$name -> $STATUS from $SERVED_BY: 200 with id ${STORED[$name]:-?} expected" \
        jq_ok '.name == $n and .id == $i' --arg n "$name" --arg i "${STORED[$name]:-}"
}

# get_rating NAME: the rating film-service registered, 5, under the film's id.
get_rating() {
    local name=$1
    req GET "/ratings?name=$(urlencode "$name")"
    check "GET /ratings?name=$name -> $STATUS from $SERVED_BY: 200, rating 5 under the film's id expected" \
        jq_ok '.name == $n and (.rating | tonumber) == 5 and .id == $i' --arg n "$name" --arg i "${STORED[$name]:-}"
}

old_stack_checks() {
    post_film 'Citizen Kane' English
    post_film 'Agneepath' Hindi
    list_films
    get_film 'Citizen Kane'
    get_rating 'Agneepath'
    post_film 'Titanic' English
    get_film 'Titanic'
    get_rating 'Titanic'
}

# sweep PATH COUNT: GET PATH until COUNT replicas have answered (round robin
# makes that COUNT requests, bounded to COUNT*6); fills ANSWER[host] with
# "status body".
declare -A ANSWER=()
sweep() {
    local path=$1 count=$2 i
    ANSWER=()
    for ((i = 0; i < count * 6 && ${#ANSWER[@]} < count; i++)); do
        req GET "$path"
        [ -n "$SERVED_BY" ] && ANSWER[$SERVED_BY]="$STATUS $BODY"
    done
    [ "${#ANSWER[@]}" -eq "$count" ]
}

# every_replica_reads_everything FILMS RATINGS WHAT: each created film is
# read (200, the same film) through FILMS film-service replicas, and its
# rating (200, 5) through RATINGS rating-service replicas, by x-served-by.
every_replica_reads_everything() {
    local films=$1 ratings=$2 what=$3 entry id name owner host bad=0 answer
    for entry in "${CREATED[@]}"; do
        IFS='|' read -r id name owner <<<"$entry"
        if ! sweep "/films/$id" "$films"; then
            bad=$((bad + 1))
            fail "$what: GET /films/$id reached only ${#ANSWER[@]} of $films film-service replicas"
            continue
        fi
        for host in "${!ANSWER[@]}"; do
            answer=${ANSWER[$host]}
            BODY=${answer#* }
            if [ "${answer%% *}" != 200 ] || ! jq_ok '.id == $i and .name == $n' --arg i "$id" --arg n "$name"; then
                bad=$((bad + 1))
                fail "$what: GET /films/$id ('$name', created by $owner) -> $(short "$answer") from $host"
            fi
        done
        if ! sweep "/ratings/$id" "$ratings"; then
            bad=$((bad + 1))
            fail "$what: GET /ratings/$id reached only ${#ANSWER[@]} of $ratings rating-service replicas"
            continue
        fi
        for host in "${!ANSWER[@]}"; do
            answer=${ANSWER[$host]}
            BODY=${answer#* }
            if [ "${answer%% *}" != 200 ] || ! jq_ok '.id == $i and (.rating | tonumber) == 5' --arg i "$id"; then
                bad=$((bad + 1))
                fail "$what: GET /ratings/$id ('$name') -> $(short "$answer") from $host"
            fi
        done
    done
    check "$what: each of the ${#CREATED[@]} films is read through every one of $films film-service replicas, its rating through every one of $ratings rating-service replicas" \
        test "$bad" = 0
}

phase "the old stack's checks (1 film-service, 1 rating-service)"
old_stack_checks

# --- 5. scale up -------------------------------------------------------------

phase "scale to $SCALE_FILM film-service + $SCALE_RATING rating-service"
t0=$SECONDS
timeout 300 "${compose[@]}" up -d --no-build --no-recreate \
    --scale film-service="$SCALE_FILM" --scale rating-service="$SCALE_RATING" >"$tmp/scale.log" 2>&1 ||
    { cat "$tmp/scale.log"; abort "${compose[*]} up --scale"; }
info "scaled in $((SECONDS - t0))s"
wait_healthy rating-service "$SCALE_RATING"
wait_healthy film-service "$SCALE_FILM"
film_hosts=$(hostnames film-service)
rating_hosts=$(hostnames rating-service)
info "film-service replicas: $(tr '\n' ' ' <<<"$film_hosts")"
info "rating-service replicas: $(tr '\n' ' ' <<<"$rating_hosts")"

# The proxy re-resolves DNS every second: wait until one round reaches all.
all_reached() {
    local i seen=""
    for ((i = 0; i < SCALE_FILM * 2; i++)); do
        req GET /films
        seen+="$SERVED_BY"$'\n'
    done
    [ "$(sort -u <<<"$seen" | grep -c .)" -eq "$SCALE_FILM" ]
}
t0=$SECONDS
if wait_for 30 all_reached; then
    pass "the proxy sends traffic to all $SCALE_FILM film-service replicas ($((SECONDS - t0))s after they were healthy)"
else
    fail "the proxy sends traffic to all $SCALE_FILM film-service replicas within 30s"
fi

phase "traffic spread"
declare -A COUNT=()
spread_failures=0
n=$((SCALE_FILM * 10))
for ((i = 0; i < n; i++)); do
    req GET /films
    COUNT[${SERVED_BY:-none}]=$((${COUNT[${SERVED_BY:-none}]:-0} + 1))
    if [ "$STATUS" != 200 ] || ! jq_ok 'type == "array"'; then spread_failures=$((spread_failures + 1)); fi
done
spread=$(for h in "${!COUNT[@]}"; do echo "$h=${COUNT[$h]}"; done | sort | tr '\n' ' ')
check "$n x GET /films: $((n - spread_failures)) answered 200 with a list" test "$spread_failures" = 0
check "$n x GET /films reached every film-service replica: $spread" \
    test "$(printf '%s\n' "${!COUNT[@]}" | sort)" = "$film_hosts"

# Every replica can create a film (and reach rating-service to register its rating).
declare -A MADE=()
for ((i = 0; i < SCALE_FILM * 4 && ${#MADE[@]} < SCALE_FILM; i++)); do
    name="Replica check $i"
    req POST /films --data "$(old_body "$name" English)"
    if [ "$STATUS" = 201 ] && [ -n "$SERVED_BY" ]; then
        STORED[$name]=$(jq -r .id <<<"$BODY")
        CREATED+=("${STORED[$name]}|$name|$SERVED_BY")
        MADE[$SERVED_BY]=1
    else
        fail "POST /films '$name' -> $STATUS from ${SERVED_BY:-?}: $(short "$BODY")"
    fi
done
check "every film-service replica creates a film: ${#MADE[@]} of $SCALE_FILM answered 201" \
    test "${#MADE[@]}" -eq "$SCALE_FILM"

phase "the old stack's checks again, on $SCALE_FILM + $SCALE_RATING replicas"
# The films exist now: 409 for the POSTs, whichever replica answers, and
# every read finds them.
old_stack_checks

phase "every replica reads every record"
every_replica_reads_everything "$SCALE_FILM" "$SCALE_RATING" "scaled"

phase "one name, 50 concurrent POSTs over $SCALE_FILM replicas"
contested="Contested $$"
seq 50 | xargs -P 50 -I{} "${CURL[@]}" -o /dev/null -D "$tmp/contested-{}" -w '%{http_code}\n' \
    -X POST "$HTTP/films" --data "$(old_body "$contested" English)" >"$tmp/contested" 2>/dev/null
created=$(grep -c '^201$' "$tmp/contested")
conflicts=$(grep -c '^409$' "$tmp/contested")
answered_by=$(cat "$tmp"/contested-* 2>/dev/null | awk 'tolower($1) == "x-served-by:" { sub(/\r$/, "", $2); print $2 }' | sort -u | grep -c .)
check "50 concurrent POST /films '$contested': $created x 201, $conflicts x 409 (1 and 49 expected), answered by $answered_by replicas" \
    test "$created:$conflicts" = 1:49
req GET "/films?name=$(urlencode "$contested")"
if [ "$STATUS" = 200 ]; then
    STORED[$contested]=$(jq -r .id <<<"$BODY")
    CREATED+=("${STORED[$contested]}|$contested|$SERVED_BY")
fi
get_rating "$contested"

# --- 7. Prometheus -----------------------------------------------------------

phase "Prometheus"
# prom_value EXPR: the first result's value of an instant query.
prom_value() {
    "${CURL[@]}" -G "$PROM/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
        jq -r '.data.result[0].value[1] // empty' 2>/dev/null
}
prom_ready() { "${CURL[@]}" -o /dev/null "$PROM/-/ready" 2>/dev/null; }
prom_is() { [ "$(prom_value "$1")" = "$2" ]; }
prom_positive() { awk -v v="$(prom_value "$1")" 'BEGIN { exit !(v + 0 > 0) }'; }
check "Prometheus is ready at $PROM" wait_for 60 prom_ready
check 'Prometheus scrapes the proxy: up{job="frontend-proxy"} == 1' \
    wait_for 30 prom_is 'up{job="frontend-proxy"}' 1
if wait_for 30 prom_positive 'sum(envoy_cluster_upstream_rq_total)'; then
    pass "envoy_cluster_upstream_rq_total has data (sum over clusters: $(prom_value 'sum(envoy_cluster_upstream_rq_total)'))"
else
    fail "envoy_cluster_upstream_rq_total has data within 30s"
fi
check "DNS service discovery finds all $SCALE_FILM film-service replicas, all up" \
    wait_for 60 prom_is 'count(up{job="film-service"} == 1)' "$SCALE_FILM"
check "DNS service discovery finds all $SCALE_RATING rating-service replicas, all up" \
    wait_for 60 prom_is 'count(up{job="rating-service"} == 1)' "$SCALE_RATING"
info "proxy upstream requests by cluster: $("${CURL[@]}" -G "$PROM/api/v1/query" \
    --data-urlencode 'query=sum by (envoy_cluster_name) (envoy_cluster_upstream_rq_total)' 2>/dev/null |
    jq -c '[.data.result[] | {(.metric.envoy_cluster_name // "?"): .value[1]}] | add' 2>/dev/null)"

# --- 8. scale down under load ------------------------------------------------

phase "scale down to $DOWN_FILM film-service + $DOWN_RATING rating-service while requests run"
# Bounded request loops (2 minutes or 4000 requests each, at most), one per
# route; each line: status x-served-by.
load() {
    local path=$1 out=$2 i code
    for ((i = 0; i < 4000 && SECONDS < $3; i++)); do
        [ -e "$tmp/stop" ] && break
        code=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$HTTP$path" 2>/dev/null) || code=000
        echo "$code" >>"$out"
    done
}
lines() { cat "$@" 2>/dev/null | wc -l; }
deadline=$((SECONDS + 120))
load /films "$tmp/load-films" "$deadline" &
bg_pids+=($!)
load /ratings "$tmp/load-ratings" "$deadline" &
bg_pids+=($!)
at_least() { [ "$(lines "$tmp"/load-*)" -ge "$1" ]; }
wait_for 30 at_least 50 || true
t0=$SECONDS
timeout 300 "${compose[@]}" up -d --no-build --no-recreate \
    --scale film-service="$DOWN_FILM" --scale rating-service="$DOWN_RATING" >"$tmp/scale.log" 2>&1 ||
    { cat "$tmp/scale.log"; fail "${compose[*]} up --scale (down)"; }
info "scaled down in $((SECONDS - t0))s (the stopped replicas got SIGTERM)"
# Keep the load on until the proxy has long dropped the old replicas from
# DNS (refresh every 1 s): another 300 requests.
mark=$(lines "$tmp"/load-*)
wait_for 60 at_least $((mark + 300)) || true
touch "$tmp/stop"
wait "${bg_pids[@]}" 2>/dev/null
bg_pids=()
total=$(lines "$tmp"/load-*)
bad=$(cat "$tmp"/load-* | grep -vc '^200$')
check "no request failed during the scale-down: $total requests, $bad not 200 ($(cat "$tmp"/load-* | sort | uniq -c | awk '{printf "%s x %s ", $1, $2}'))" \
    test "$bad" -eq 0
check "the request loops ran through the scale-down ($total requests, more than 300)" test "$total" -gt 300
scaled_down() { all_healthy film-service "$DOWN_FILM" && all_healthy rating-service "$DOWN_RATING"; }
check "$DOWN_FILM film-service and $DOWN_RATING rating-service replicas left, healthy" scaled_down
left=$(hostnames film-service)
declare -A SEEN=()
for ((i = 0; i < DOWN_FILM * 5; i++)); do
    req GET /films
    SEEN[${SERVED_BY:-none}]=1
done
check "after the scale-down only the remaining replicas answer ($(printf '%s ' "${!SEEN[@]}"))" \
    test "$(printf '%s\n' "${!SEEN[@]}" | sort)" = "$left"

# --- 9. restarts -------------------------------------------------------------

phase "restarts"
restarted=$(for id in $("${compose[@]}" ps -q); do
    docker inspect -f '{{.Name}} {{.RestartCount}}' "$id"
done | awk '$2 != 0')
check "no container restarted${restarted:+ ($restarted)}" test -z "$restarted"

# --- 9b. the database goes away, the stack restarts ---------------------------

phase "PostgreSQL stopped, then started again"
timeout 60 "${compose[@]}" stop postgres >"$tmp/pg.log" 2>&1 || { cat "$tmp/pg.log"; fail "${compose[*]} stop postgres"; }
req GET /films
check "PostgreSQL stopped: GET /films -> $STATUS from ${SERVED_BY:-?}, 503 with a JSON error expected: $(short "$BODY")" \
    jq_ok '.error == "database unavailable; try again later"'
check "PostgreSQL stopped: the answer was a 503" test "$STATUS" = 503
req POST /films --data "$(old_body "Lost $$" English)"
check "PostgreSQL stopped: POST /films -> $STATUS (503 expected), nothing stored" test "$STATUS" = 503
film_id=$(running film-service | head -n 1)
unhealthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$film_id")" = unhealthy ]; }
check "PostgreSQL stopped: Docker's health check reports film-service unhealthy (/healthz not ready)" wait_for 30 unhealthy
timeout 60 "${compose[@]}" start postgres >"$tmp/pg.log" 2>&1 || { cat "$tmp/pg.log"; fail "${compose[*]} start postgres"; }
wait_healthy postgres 1
films_back() { req GET "/films?limit=1000" && [ "$STATUS" = 200 ]; }
check "PostgreSQL back: the services answer 200 again by themselves" wait_for 60 films_back
wait_healthy film-service "$DOWN_FILM"
wait_healthy rating-service "$DOWN_RATING"
list_films

phase "docker compose restart (every service)"
t0=$SECONDS
timeout 300 "${compose[@]}" restart --timeout 10 >"$tmp/restart.log" 2>&1 ||
    { cat "$tmp/restart.log"; fail "${compose[*]} restart"; }
info "restarted in $((SECONDS - t0))s"
wait_healthy postgres 1
wait_healthy rating-service "$DOWN_RATING"
wait_healthy film-service "$DOWN_FILM"
wait_healthy frontend-proxy 1
check "after the restart: admin $ADMIN/ready answers LIVE" wait_for 60 ready
check "after the restart: GET /films answers 200" wait_for 60 films_back
list_films
every_replica_reads_everything "$DOWN_FILM" "$DOWN_RATING" "after restart"

phase "docker compose down (volumes kept), then up"
t0=$SECONDS
timeout 120 "${compose[@]}" down --timeout 10 >"$tmp/down.log" 2>&1 || { cat "$tmp/down.log"; fail "${compose[*]} down"; }
timeout 300 "${compose[@]}" up -d --no-build >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; abort "${compose[*]} up -d"; }
info "down and up in $((SECONDS - t0))s"
wait_healthy postgres 1
wait_healthy rating-service 1
wait_healthy film-service 1
wait_healthy frontend-proxy 1
check "after down and up: admin $ADMIN/ready answers LIVE" wait_for 60 ready
check "after down and up: GET /films answers 200" wait_for 60 films_back
list_films
every_replica_reads_everything 1 1 "after down and up"

# --- 10. stop ------------------------------------------------------------------

if [ "$keep" = 0 ]; then
    phase "stop"
    ids=$("${compose[@]}" ps -q)
    t0=$SECONDS
    timeout 120 "${compose[@]}" stop --timeout 10 >"$tmp/stop.log" 2>&1 || { cat "$tmp/stop.log"; fail "${compose[*]} stop"; }
    took=$((SECONDS - t0))
    # 137 = SIGKILL: a container that ignored SIGTERM for the whole grace period.
    codes=$(for id in $ids; do docker inspect -f '{{.Name}}={{.State.ExitCode}}' "$id"; done | sed 's|^/||' | sort)
    killed=$(grep -c '=137$' <<<"$codes")
    stopped_in_time() { [ "$killed" -eq 0 ] && [ "$took" -lt 10 ]; }
    check "every container exited on SIGTERM, none killed, in ${took}s ($(tr '\n' ' ' <<<"$codes"))" \
        stopped_in_time
fi
