-- One money transfer between two random accounts, in a transaction.
-- pgbench -n -f transfer.sql -D accounts=3000 -c 16 -T 30 --max-tries=100
-- (retries serialization failures and deadlocks, SQLSTATE 40001/40P01)
\set from random(1, :accounts)
\set to random(1, :accounts)
\set amount random(1, 100)
BEGIN;
UPDATE accounts SET balance = balance - :amount WHERE id = :from;
UPDATE accounts SET balance = balance + :amount WHERE id = :to;
COMMIT;
