-- pgpod 0.1 -> 0.2. Every change to sql/*.sql after 0.1 also goes here, in the
-- same order, so that a walked-up database equals a fresh one
-- (tests/integration/030_migrations.t compares their schemas).
\echo Use "ALTER EXTENSION pgpod UPDATE TO '0.2'" to load this file. \quit
