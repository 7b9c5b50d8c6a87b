#!/usr/bin/env python3
"""A psycopg 3 application run through pgwarden by test/integration/real-client-python.test.ts.

Usage: psycopg3_client.py PROXY_DSN DIRECT_DSN

It uses psycopg the way an application does (default, non-autocommit connection: psycopg opens a
transaction before the first statement) and prints one JSON line per step, reporting what the
application saw: rows with each value's Python type, notices, errors with SQLSTATE. DIRECT_DSN
points at PostgreSQL itself, so the test can compare the proxied values with the real ones.
Held statements wait here until the test's reviewer decides them through the REST API.
"""
import json
import sys
import time

import psycopg

PROXY_DSN, DIRECT_DSN = sys.argv[1], sys.argv[2]

MASKED_QUERY = "SELECT id, name, email, ssn, credit_limit, balance, joined FROM customers ORDER BY id"


def cell(v):
    return [type(v).__name__, None if v is None else str(v)]


def rows(cur):
    return [[cell(v) for v in r] for r in cur.fetchall()]


def emit(step, **kw):
    print(json.dumps({"step": step, **kw}), flush=True)


def error(e):
    return {
        "class": type(e).__name__,
        "sqlstate": e.sqlstate,
        "message": e.diag.message_primary,
        "detail": e.diag.message_detail,
    }


notices = []
conn = psycopg.connect(PROXY_DSN)
conn.add_notice_handler(lambda d: notices.append(d.message_primary))
direct = psycopg.connect(DIRECT_DSN, autocommit=True)


def step(name, fn):
    try:
        fn()
    except Exception as e:  # report, and let the next step run on a clean connection
        emit(name, exception=f"{type(e).__name__}: {e}")
        conn.rollback()


def connect():
    r = conn.execute("SELECT current_user, current_database(), current_setting('application_name')").fetchone()
    emit("connect", user=r[0], database=r[1], application=r[2],
         server_version=conn.info.server_version, direct_server_version=direct.info.server_version)
    conn.commit()


def simple():
    # No parameters: psycopg sends a simple Query message.
    cur = conn.execute("SELECT 1 + 1 AS two, 'h\u00e9llo w\u00f6rld' AS greeting, NULL::int AS nothing")
    emit("simple", columns=[d.name for d in cur.description], rows=rows(cur))
    conn.commit()


def prepared():
    # With parameters: Parse/Bind/Execute; prepare=True makes it a named server-side statement
    # that psycopg prepares once and then reuses.
    unnamed = [rows(conn.execute("SELECT id, title, price FROM products WHERE id = %s", [i])) for i in (1, 2)]
    named = [rows(conn.execute("SELECT id, title, price FROM products WHERE id = %s", [i], prepare=True)) for i in (1, 2, 3, 1)]
    # The server's own list: psycopg really made a named statement (psycopg names them _pg3_N).
    names = [r[0] for r in conn.execute("SELECT name FROM pg_prepared_statements").fetchall()]
    emit("prepared", unnamed=unnamed, named=named, server_statements=names)
    conn.commit()


def masked():
    cur = conn.execute(MASKED_QUERY)
    columns = [d.name for d in cur.description]
    proxy = rows(cur)
    param = rows(conn.execute("SELECT name, email FROM customers WHERE id = %s", [2]))
    named = rows(conn.execute("SELECT id, email, ssn FROM customers WHERE id = %s", [1], prepare=True))
    bcur = conn.cursor(binary=True)
    bcur.execute(MASKED_QUERY)
    binary = rows(bcur)
    dcur = direct.cursor(binary=True)
    dcur.execute(MASKED_QUERY)
    emit("masked", columns=columns, proxy=proxy, direct=rows(direct.execute(MASKED_QUERY)),
         param=param, named=named, binary=binary, binary_direct=rows(dcur))
    conn.commit()


def held():
    before = len(notices)
    started = time.monotonic()
    cur = conn.execute("SELECT id, label FROM vault WHERE id <= %s ORDER BY id", [2])
    emit("held", rows=rows(cur), notices=notices[before:], waited_ms=int((time.monotonic() - started) * 1000))
    conn.commit()


def held_prepared():
    # prepare=True on a held statement: psycopg prepares it (Parse/Sync) and then runs it
    # (Bind/Describe/Execute/Sync); the second call reuses the server-side statement.
    before = len(notices)
    first = rows(conn.execute("SELECT label FROM vault WHERE id = %s", [1], prepare=True))
    conn.commit()
    second = rows(conn.execute("SELECT label FROM vault WHERE id = %s", [2], prepare=True))
    conn.commit()
    emit("held_prepared", first=first, second=second, notices=notices[before:])


def denied(name, sql, params):
    def run():
        try:
            conn.execute(sql, params)
            conn.commit()
            emit(name, error=None)
        except psycopg.Error as e:
            status = conn.info.transaction_status.name
            conn.rollback()
            after = conn.execute("SELECT 'still usable'").fetchone()[0]
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
