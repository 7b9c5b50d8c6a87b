#!/usr/bin/env python3
"""A psycopg2 application run through pgwarden by test/integration/real-client-python.test.ts.

Usage: psycopg2_client.py PROXY_DSN DIRECT_DSN

psycopg2 interpolates parameters on the client and sends every statement as a simple Query,
inside a transaction it opens itself (default, non-autocommit connection); server-side prepared
statements are SQL PREPARE/EXECUTE. One JSON line per step reports what the application saw:
rows with each value's Python type, notices, errors with SQLSTATE. DIRECT_DSN points at
PostgreSQL itself, for comparing the proxied values with the real ones.
"""
import json
import sys
import time

import psycopg2
import psycopg2.extensions

PROXY_DSN, DIRECT_DSN = sys.argv[1], sys.argv[2]

MASKED_QUERY = "SELECT id, name, email, ssn, credit_limit, balance, joined FROM customers ORDER BY id"
TX_STATUS = {
    psycopg2.extensions.TRANSACTION_STATUS_IDLE: "IDLE",
    psycopg2.extensions.TRANSACTION_STATUS_ACTIVE: "ACTIVE",
    psycopg2.extensions.TRANSACTION_STATUS_INTRANS: "INTRANS",
    psycopg2.extensions.TRANSACTION_STATUS_INERROR: "INERROR",
    psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN: "UNKNOWN",
}


def cell(v):
    return [type(v).__name__, None if v is None else str(v)]


def rows(cur):
    return [[cell(v) for v in r] for r in cur.fetchall()]


def emit(step, **kw):
    print(json.dumps({"step": step, **kw}), flush=True)


def query(c, sql, params=None):
    cur = c.cursor()
    cur.execute(sql, params)
    return cur


def error(e):
    return {
        "class": type(e).__name__,
        "sqlstate": e.pgcode,
        "message": e.diag.message_primary,
        "detail": e.diag.message_detail,
    }


conn = psycopg2.connect(PROXY_DSN)
direct = psycopg2.connect(DIRECT_DSN)
direct.autocommit = True


def notices_since(n):
    return [s.strip() for s in conn.notices[n:]]


def step(name, fn):
    try:
        fn()
    except Exception as e:  # report, and let the next step run on a clean connection
        emit(name, exception=f"{type(e).__name__}: {e}")
        conn.rollback()


def connect():
    r = query(conn, "SELECT current_user, current_database(), current_setting('application_name')").fetchone()
    emit("connect", user=r[0], database=r[1], application=r[2],
         server_version=conn.server_version, direct_server_version=direct.server_version)
    conn.commit()


def simple():
    cur = query(conn, "SELECT 1 + 1 AS two, 'h\u00e9llo w\u00f6rld' AS greeting, NULL::int AS nothing")
    emit("simple", columns=[d.name for d in cur.description], rows=rows(cur))
    conn.commit()


def prepared():
    params = [rows(query(conn, "SELECT id, title, price FROM products WHERE id = %s", [i])) for i in (1, 2)]
    query(conn, "PREPARE product_by_id(int) AS SELECT id, title, price FROM products WHERE id = $1")
    named = [rows(query(conn, "EXECUTE product_by_id(%s)", [i])) for i in (1, 2, 3, 1)]
    query(conn, "DEALLOCATE product_by_id")
    emit("prepared", params=params, named=named)
    conn.commit()


def masked():
    cur = query(conn, MASKED_QUERY)
    columns = [d.name for d in cur.description]
    proxy = rows(cur)
    param = rows(query(conn, "SELECT name, email FROM customers WHERE id = %s", [2]))
    query(conn, "PREPARE customer_by_id(int) AS SELECT id, email, ssn FROM customers WHERE id = $1")
    named = rows(query(conn, "EXECUTE customer_by_id(%s)", [1]))
    query(conn, "DEALLOCATE customer_by_id")
    emit("masked", columns=columns, proxy=proxy, direct=rows(query(direct, MASKED_QUERY)), param=param, named=named)
    conn.commit()


def held():
    before = len(conn.notices)
    started = time.monotonic()
    cur = query(conn, "SELECT id, label FROM vault WHERE id <= %s ORDER BY id", [2])
    emit("held", rows=rows(cur), notices=notices_since(before), waited_ms=int((time.monotonic() - started) * 1000))
    conn.commit()


def held_prepared():
    # SQL-level PREPARE of a statement that needs review, then two EXECUTEs of it.
    before = len(conn.notices)
    query(conn, "PREPARE vault_label(int) AS SELECT label FROM vault WHERE id = $1")
    conn.commit()
    first = rows(query(conn, "EXECUTE vault_label(%s)", [1]))
    conn.commit()
    second = rows(query(conn, "EXECUTE vault_label(%s)", [2]))
    conn.commit()
    query(conn, "DEALLOCATE vault_label")
    conn.commit()
    emit("held_prepared", first=first, second=second, notices=notices_since(before))


def denied(name, sql, params):
    def run():
        try:
            query(conn, sql, params)
            conn.commit()
            emit(name, error=None)
        except psycopg2.Error as e:
            status = TX_STATUS[conn.get_transaction_status()]
            conn.rollback()
            after = query(conn, "SELECT 'still usable'").fetchone()[0]
            conn.commit()
            emit(name, error=error(e), tx_status=status, after=after)
    return run


step("connect", connect)
step("simple", simple)
step("prepared", prepared)
step("masked", masked)
step("held", held)
step("held_prepared", held_prepared)
step("denied_by_reviewer", denied("denied_by_reviewer", "DELETE FROM vault WHERE id = %s", [1]))
step("denied_by_rule", denied("denied_by_rule", "SELECT pg_read_file(%s)", ["/etc/hostname"]))
conn.close()
direct.close()
emit("end")
