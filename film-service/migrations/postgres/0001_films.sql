-- Films. `seq` is the listing order (oldest first) and the page cursor;
-- `id` is the public key. A film is created in two steps (see
-- film-service/src/creation.rs): a row with `pending_since` set holds its id
-- and name while its rating is registered, and is invisible to readers;
-- `pending_since = NULL` makes it a film. An abandoned pending row keeps its
-- id for the sweeper but gives its name back (NULL), so it blocks nobody.
CREATE TABLE films (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id UUID NOT NULL UNIQUE,
    name TEXT UNIQUE,
    language TEXT NOT NULL,
    -- Milliseconds since the Unix epoch, by the database's clock, so every
    -- replica judges a pending row's age with the same clock.
    pending_since BIGINT,
    CONSTRAINT films_named_unless_pending CHECK (name IS NOT NULL OR pending_since IS NOT NULL)
);

-- The sweeper's query path: pending rows only, so the index stays tiny.
CREATE INDEX films_pending ON films (pending_since) WHERE pending_since IS NOT NULL;
