#!/bin/sh
# Run once by the postgres image when it creates the primary's cluster: let the replica stream from it.
set -e
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
