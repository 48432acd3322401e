#!/usr/bin/env bash
# What `make images` needs on a machine with no container tooling running, started only when
# missing (each step is idempotent):
#   images/engine.sh docker     a Docker engine on the default socket (Debian's docker.io,
#                               overlay2, else vfs; no bridge: builds and tasks use the host network)
#   images/engine.sh base       the base image, debian:<suite>-slim, made with debootstrap when no
#                               registry can give it (SUITE, default bookworm: its python3 is 3.11)
#   images/engine.sh registry   an OCI registry on 127.0.0.1:5000 (Debian's docker-registry)
# On a machine that already has an engine, the base image and a registry, each step does nothing.
set -euo pipefail

SUITE=${SUITE:-bookworm}
STATE=${FREEMASK_ENGINE_STATE:-/var/lib/freemask-engine}
REGISTRY_ADDR=${REGISTRY_ADDR:-127.0.0.1:5000}

say() { printf 'engine: %s\n' "$*" >&2; }

need() {  # need COMMAND PACKAGE: install Debian's PACKAGE when COMMAND is missing
    command -v "$1" >/dev/null && return
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        say "$1 is missing: install Debian's $2 (or start a Docker engine yourself)"
        exit 2
    fi
    say "installing $2"
    [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit)" ] ||
        apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null
}

wait_for() {  # wait_for SECONDS COMMAND...: true once COMMAND succeeds
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 1
    done
}

start_docker() {
    docker info >/dev/null 2>&1 && return
    need dockerd docker.io
    command -v docker >/dev/null || need docker docker.io
    mkdir -p "$STATE"
    for driver in overlay2 vfs; do
        say "starting dockerd (storage driver $driver), log $STATE/dockerd.log"
        setsid dockerd --storage-driver "$driver" --iptables=false --bridge=none \
            --host unix:///var/run/docker.sock >>"$STATE/dockerd.log" 2>&1 </dev/null &
        if wait_for 60 docker info && docker run --rm --network host "$(any_image)" true 2>/dev/null; then
            return
        fi
        kill "$!" 2>/dev/null || true
        wait_for 30 test ! -S /var/run/docker.sock || true
    done
    say "dockerd did not start: see $STATE/dockerd.log"
    exit 1
}

any_image() {  # an image to try the engine with: the base, made first when missing
    make_base >&2
    printf 'debian:%s-slim' "$SUITE"
}

make_base() {
    local image="debian:$SUITE-slim"
    docker image inspect "$image" >/dev/null 2>&1 && return
    docker pull -q "$image" >/dev/null 2>&1 && return
    need debootstrap debootstrap
    local root
    root=$(mktemp -d)
    say "making $image with debootstrap (minbase, http://deb.debian.org/debian)"
    debootstrap --variant=minbase "$SUITE" "$root" http://deb.debian.org/debian >/dev/null
    # The official slim image's sources (deb822) and what it strips: apt lists, docs, man pages.
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*
    tar -C "$root" --numeric-owner -c . | docker import --change 'CMD ["bash"]' - "$image" >/dev/null
    rm -rf "$root"
    say "made $image"
}

start_registry() {
    curl -fsS "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1 && return
    need docker-registry docker-registry
    mkdir -p "$STATE/registry"
    cat >"$STATE/registry.yml" <<CONFIG
version: 0.1
storage:
  filesystem:
    rootdirectory: $STATE/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
CONFIG
    say "starting docker-registry on $REGISTRY_ADDR, log $STATE/registry.log"
    setsid docker-registry serve "$STATE/registry.yml" >>"$STATE/registry.log" 2>&1 </dev/null &
    wait_for 30 curl -fsS "http://$REGISTRY_ADDR/v2/" || { say "the registry did not start"; exit 1; }
}

for step in "$@"; do
    case "$step" in
    docker) start_docker ;;
    base) make_base ;;
    registry) start_registry ;;
    *) say "unknown step $step (docker, base, registry)"; exit 2 ;;
    esac
done
