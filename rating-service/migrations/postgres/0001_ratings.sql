-- Ratings. `seq` is the listing order (oldest first) and the page cursor;
-- `id` is the public key (film-service passes the film's id). Names repeat
-- (a deleted film's rating outlives it); a lookup by name finds the newest.
CREATE TABLE ratings (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id UUID NOT NULL UNIQUE,
    name TEXT NOT NULL,
    rating DOUBLE PRECISION NOT NULL CHECK (rating >= 0 AND rating <= 5)
);

-- `GET /ratings?name=`: the newest of a name is the last entry of its range.
CREATE INDEX ratings_name_seq ON ratings (name, seq);
