CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score INTEGER);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500)
INSERT INTO t SELECT x, printf('n%03d', x % 97), (x * 7919) % 1000 FROM c;
CREATE INDEX t_score ON t(score);
SELECT count(*), sum(score), min(name), max(name) FROM t;
SELECT name, count(*) AS k FROM t GROUP BY name ORDER BY k DESC, name LIMIT 5;
SELECT id FROM t WHERE score BETWEEN 10 AND 20 ORDER BY id;
