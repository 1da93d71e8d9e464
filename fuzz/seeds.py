#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets to corpus/<target>/seed-*.

Run it again after changing a target's input format; the fuzzer grows the
corpus from these."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    with open(os.path.join(HERE, "corpus", target, "seed-" + name), "wb") as f:
        f.write(data)


SQL = [
    "SELECT 1 + 2 * 3, 'a' || 'b', -4 % 3, 7 / 2, 1.5::int, NULL IS NULL",
    "SELECT id, owner FROM accounts WHERE id = 1",
    "SELECT * FROM accounts WHERE id BETWEEN 1 AND 3 AND balance > 0 ORDER BY balance DESC NULLS LAST LIMIT 2 OFFSET 1",
    "SELECT owner, count(*), sum(balance), avg(rate), min(id), max(owner) FROM accounts GROUP BY owner HAVING count(*) > 0",
    "SELECT DISTINCT active FROM accounts WHERE owner LIKE 'a%' OR owner ILIKE '%B' OR id IN (1, 2, 3)",
    "SELECT upper(owner), lower(owner), length(owner), abs(balance), coalesce(rate, 0.5) FROM accounts WHERE NOT active",
    "SELECT count(*) FROM notes WHERE code >= 'a' AND code < 'm' AND n <> 3",
    "INSERT INTO accounts VALUES (1, 'alice', 100, 0.5, true), (2, 'bob', 0, NULL, false)",
    "INSERT INTO notes (code, body) VALUES ('x', 'y')",
    "UPDATE accounts SET balance = balance - 10, rate = rate * 2 WHERE id = 1",
    "UPDATE accounts SET owner = owner || '!' WHERE balance > 5",
    "DELETE FROM accounts WHERE id = 2",
    "DELETE FROM notes WHERE body IS NULL",
    "SELECT * FROM accounts WHERE id = $1 AND owner = $2",
    "CREATE TABLE t (id INT PRIMARY KEY, v TEXT NOT NULL DEFAULT 'x' CHECK (length(v) < 10))",
    "BEGIN; UPDATE accounts SET balance = balance + 1 WHERE id = 1; COMMIT",
    "SELECT " + " + ".join(["1"] * 50),
    "SELECT count(*) FROM accounts WHERE " + " OR ".join("id = %d" % i for i in range(50)),
]


def startup(user=b"tessera"):
    body = struct.pack(">i", 3 << 16) + b"user\0" + user + b"\0database\0tessera\0\0"
    return struct.pack(">i", len(body) + 4) + body


def msg(kind, body):
    return kind + struct.pack(">i", len(body) + 4) + body


def bind(portal, stmt, formats, params, result_formats):
    body = portal + b"\0" + stmt + b"\0" + struct.pack(">h", len(formats))
    body += b"".join(struct.pack(">h", f) for f in formats)
    body += struct.pack(">h", len(params))
    for p in params:
        body += struct.pack(">i", -1) if p is None else struct.pack(">i", len(p)) + p
    body += struct.pack(">h", len(result_formats)) + b"".join(struct.pack(">h", f) for f in result_formats)
    return msg(b"B", body)


PG = {
    "startup-query": b"\0" + startup() + msg(b"Q", b"SELECT 1\0") + msg(b"X", b""),
    "startup-scram": b"\0" + startup() + msg(b"p", b"SCRAM-SHA-256\0" + struct.pack(">i", 32) + b"n,,n=,r=abcdefghijklmnopqrstuvw") + msg(b"p", b"c=biws,r=abc,p=xyz"),
    "cancel": b"\0" + struct.pack(">iiii", 16, 80877102, 7, 9),
    "extended": b"\1"
    + msg(b"P", b"s1\0SELECT $1::int\0" + struct.pack(">hi", 1, 23))
    + msg(b"D", b"Ss1\0")
    + bind(b"", b"s1", [0], [b"7"], [1])
    + msg(b"E", b"\0" + struct.pack(">i", 0))
    + msg(b"C", b"Ss1\0")
    + msg(b"H", b"")
    + msg(b"S", b""),
    "binary-params": b"\1" + bind(b"p", b"", [1, 0], [struct.pack(">q", 5), None, b"x"], []) + msg(b"S", b""),
    "copy-and-bad-text": b"\1" + msg(b"d", b"1\t2\n") + msg(b"f", b"stop\0") + msg(b"Q", b"SELECT '\xff\xfe'\0") + msg(b"Q", b"SELECT 1\0SELECT 2\0"),
}


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(number, data):
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(data)) + data


def num(number, n):
    return varint(number << 3) + varint(n)


def txn(tid, begin=True):
    return field(1, tid) + num(2, 100) + num(3, 1 if begin else 0) + field(4, b"127.0.0.1:1")


def key(i):
    # Table 1, an integer primary key (see model/src/data/keys.rs).
    return struct.pack(">I", 1) + b"\x02" + struct.pack(">Q", (i ^ (1 << 63)) & ((1 << 64) - 1))


def column(i):
    return num(1, i)


def literal_int(n):
    return field(2, num(2, n))


def binary(op, left, right):
    return field(3, num(1, op) + field(2, left) + field(3, right))


def record(kind, body):
    return bytes([kind]) + struct.pack(">H", len(body)) + body


FILTER = binary(7, binary(5, column(0), literal_int(0)), field(5, field(1, column(1)) + field(2, field(2, field(3, b"row%")))))
CHAIN = field(7, field(1, column(0)) + b"".join(field(2, num(1, 9) + field(2, literal_int(i))) for i in range(8)))
SHARD = {
    "scan-filter": record(1, field(4, FILTER) + num(3, 2)),
    "scan-chain": record(1, field(2, b"\xff") + field(4, binary(1, CHAIN, literal_int(28)))),
    "write-prepare-commit": record(2, field(1, txn(b"t1")) + field(2, field(1, key(9)) + field(3, b"\x01\x02")) + field(2, field(1, key(1)) + num(4, 1)))
    + record(3, field(1, txn(b"t1", False)))
    + record(4, field(1, txn(b"t1", False)))
    + record(1, field(2, b"\xff") + field(5, txn(b"t2")) + num(6, 1)),
    "one-phase": record(4, field(1, txn(b"t3")) + num(2, 1) + field(3, field(1, key(5)) + field(2, b"junk"))),
    "get-abort-range": record(0, field(1, key(1)) + field(1, key(2)) + field(2, txn(b"t4")) + num(3, 1)) + record(5, field(1, txn(b"t4"))) + record(6, field(1, b"\0") + field(2, b"\xff")),
}

for i, text in enumerate(SQL):
    write("sql", "%02d" % i, text.encode())
for name, data in PG.items():
    write("pg_messages", name, data)
for name, data in SHARD.items():
    write("shard_requests", name, data)
