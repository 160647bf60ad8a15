-- Ratings: the same table as migrations/postgres/0001_ratings.sql, in
-- SQLite's types (see there for the columns).
CREATE TABLE ratings (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id BLOB NOT NULL UNIQUE,
    name TEXT NOT NULL,
    rating REAL NOT NULL CHECK (rating >= 0 AND rating <= 5)
);

CREATE INDEX ratings_name_seq ON ratings (name, seq);
