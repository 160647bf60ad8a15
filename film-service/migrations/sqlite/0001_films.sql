-- Films: the same table as migrations/postgres/0001_films.sql, in SQLite's
-- types (see there for the columns). AUTOINCREMENT: a deleted last row's
-- `seq` is never reused, so a page cursor never points into newer films.
CREATE TABLE films (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id BLOB NOT NULL UNIQUE,
    name TEXT UNIQUE,
    language TEXT NOT NULL,
    pending_since INTEGER,
    CONSTRAINT films_named_unless_pending CHECK (name IS NOT NULL OR pending_since IS NOT NULL)
);

CREATE INDEX films_pending ON films (pending_since) WHERE pending_since IS NOT NULL;
