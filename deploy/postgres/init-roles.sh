#!/usr/bin/env bash
# One database per service, owned by a login role of its own with its own password: the
# services share nothing but the event contracts, and one service's credentials open no
# other's database. The postgres image runs this once, on an empty data directory
# (/docker-entrypoint-initdb.d), as the superuser it was given.
#
# Needs, besides the image's POSTGRES_USER and POSTGRES_DB, a password per service:
# OVERSIGHT_DB_PASSWORD, VOUCHER_DB_PASSWORD, TAXCREDIT_DB_PASSWORD, FUND_DB_PASSWORD.
# INCENTIVES_DB_NAME_PREFIX (empty in docker-compose.yml) is put before every role and
# database name: the tests run this script on a server others use too.
set -euo pipefail

prefix="${INCENTIVES_DB_NAME_PREFIX:-}"

create_service_database() {
    local name="$prefix$1" password="$2"
    # psql variables quote the names (:"name") and the password (:'password'): no value is
    # ever pasted into SQL text.
    psql --no-psqlrc --set ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
        --set name="$name" --set password="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE;
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
}

create_service_database oversight "${OVERSIGHT_DB_PASSWORD:?set OVERSIGHT_DB_PASSWORD}"
create_service_database voucher "${VOUCHER_DB_PASSWORD:?set VOUCHER_DB_PASSWORD}"
create_service_database taxcredit "${TAXCREDIT_DB_PASSWORD:?set TAXCREDIT_DB_PASSWORD}"
create_service_database fund "${FUND_DB_PASSWORD:?set FUND_DB_PASSWORD}"
