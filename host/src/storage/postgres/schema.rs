//! The PostgreSQL schema as numbered migrations, applied in order at start under one lock,
//! so that hosts starting together apply each once. A database whose schema is newer than
//! this build knows is refused: an older host must not write into tables whose meaning it
//! does not know.

/// Migration `i + 1` is `MIGRATIONS[i]`. Never edit one that has shipped: add the next.
pub const MIGRATIONS: &[&str] = &[
    // 1: plugins' key-value data, the journal, and booking claims across hosts.
    r#"
    CREATE TABLE kv (
        ns TEXT NOT NULL,
        -- Byte order, as the other backends list keys.
        key TEXT COLLATE "C" NOT NULL,
        value BYTEA NOT NULL,
        PRIMARY KEY (ns, key)
    );
    CREATE TABLE journal (
        key TEXT PRIMARY KEY,
        route TEXT NOT NULL,
        plugin TEXT NOT NULL,
        response BYTEA NOT NULL,
        at BIGINT NOT NULL
    );
    CREATE INDEX journal_at ON journal (at);
    -- A booking running on some host: the fence its commit must present, until when.
    -- `waited`: another host waits for it, so its end is announced.
    CREATE TABLE claims (
        key TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        fence BIGINT NOT NULL,
        expires TIMESTAMPTZ NOT NULL,
        waited BOOLEAN NOT NULL DEFAULT false
    );
    CREATE SEQUENCE claim_fences;

    -- Commits a group of bookings in one transaction and one round trip: each is checked
    -- (journal, keys read, listings made, its claim) after the ones before it and applied
    -- only if everything holds; a check that fails writes nothing of that booking.
    -- Namespaces are locked in one order for the whole transaction, so hosts committing
    -- to the same namespace check and write one after another.
    CREATE FUNCTION followup_commit(batches JSONB)
    RETURNS TABLE (o_outcome TEXT, o_route TEXT, o_plugin TEXT, o_response BYTEA, o_at BIGINT)
    LANGUAGE plpgsql AS $$
    DECLARE
        b JSONB; e JSONB; l JSONB; w JSONB; j JSONB;
        seen BYTEA; listed TEXT[]; ok BOOLEAN; waited BOOLEAN;
        r RECORD;
    BEGIN
        PERFORM pg_advisory_xact_lock(h)
        FROM (SELECT DISTINCT hashtextextended(x->>'ns', 0) AS h
              FROM jsonb_array_elements(batches) x ORDER BY 1) locks;
        FOR b IN SELECT * FROM jsonb_array_elements(batches) LOOP
            j := b->'journal';
            IF jsonb_typeof(j) = 'object' THEN
                SELECT * INTO r FROM journal WHERE journal.key = j->>'key';
                IF FOUND THEN
                    o_outcome := 'recorded'; o_route := r.route; o_plugin := r.plugin;
                    o_response := r.response; o_at := r.at;
                    RETURN NEXT;
                    CONTINUE;
                END IF;
            END IF;
            o_route := NULL; o_plugin := NULL; o_response := NULL; o_at := NULL;
            ok := true;
            FOR e IN SELECT * FROM jsonb_array_elements(b->'expect') LOOP
                seen := NULL;
                SELECT kv.value INTO seen FROM kv
                WHERE kv.ns = b->>'ns' AND kv.key = (e->>0) COLLATE "C";
                IF seen IS DISTINCT FROM decode(e->>1, 'hex') THEN ok := false; EXIT; END IF;
            END LOOP;
            IF ok THEN
                FOR l IN SELECT * FROM jsonb_array_elements(b->'lists') LOOP
                    SELECT coalesce(array_agg(k ORDER BY k), '{}') INTO listed FROM (
                        SELECT kv.key AS k FROM kv
                        WHERE kv.ns = b->>'ns' AND kv.key >= (l->>0) COLLATE "C"
                          AND (l->>1 IS NULL OR kv.key < (l->>1) COLLATE "C")
                        ORDER BY kv.key LIMIT (l->>2)::INT) s;
                    IF listed IS DISTINCT FROM ARRAY(SELECT jsonb_array_elements_text(l->3)) THEN
                        ok := false; EXIT;
                    END IF;
                END LOOP;
            END IF;
            IF ok AND jsonb_typeof(b->'lease') = 'number' THEN
                DELETE FROM claims
                WHERE claims.key = j->>'key' AND claims.fence = (b->>'lease')::BIGINT
                RETURNING claims.waited INTO waited;
                IF NOT FOUND THEN
                    ok := false;
                ELSIF waited THEN
                    PERFORM pg_notify('followup_claims', j->>'key');
                END IF;
            END IF;
            IF NOT ok THEN
                o_outcome := 'conflict';
                RETURN NEXT;
                CONTINUE;
            END IF;
            FOR w IN SELECT * FROM jsonb_array_elements(b->'writes') LOOP
                IF w->>1 IS NULL THEN
                    DELETE FROM kv WHERE kv.ns = b->>'ns' AND kv.key = (w->>0) COLLATE "C";
                ELSE
                    INSERT INTO kv (ns, key, value) VALUES (b->>'ns', w->>0, decode(w->>1, 'hex'))
                    ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value;
                END IF;
            END LOOP;
            IF jsonb_typeof(j) = 'object' THEN
                INSERT INTO journal (key, route, plugin, response, at)
                VALUES (j->>'key', j->>'route', j->>'plugin', decode(j->>'response', 'hex'),
                        (j->>'at')::BIGINT);
            END IF;
            o_outcome := 'done';
            RETURN NEXT;
        END LOOP;
    END $$;
    "#,
    // 2: plugin versions every host serves, and the hosts that serve them.
    r#"
    CREATE TABLE plugin_components (
        plugin TEXT NOT NULL,
        hash TEXT NOT NULL,
        bytes BYTEA NOT NULL,
        PRIMARY KEY (plugin, hash)
    );
    -- The version every host serves, changed by one transaction with its component.
    CREATE TABLE plugin_serving (
        plugin TEXT PRIMARY KEY,
        hash TEXT NOT NULL,
        generation BIGINT NOT NULL,
        how TEXT NOT NULL,
        by_host TEXT NOT NULL,
        at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    -- Live hosts: each writes its row every few seconds, with what it serves.
    CREATE TABLE hosts (
        id TEXT PRIMARY KEY,
        started TIMESTAMPTZ NOT NULL DEFAULT now(),
        seen TIMESTAMPTZ NOT NULL DEFAULT now(),
        serving JSONB NOT NULL DEFAULT '{}'
    );
    "#,
    // 3: claims leave no trace in the WAL. A claim lives seconds and is worth nothing
    // after a crash of the database (every booking in flight then fails its commit, and a
    // commit whose claim is gone applies nothing), so making one must not cost a WAL flush
    // of its own: that was one fsync per booking. Fences come from transaction ids.
    r#"
    ALTER TABLE claims SET UNLOGGED;
    DROP SEQUENCE claim_fences;
    "#,
    // 4: tapes of bookings, for replay; written in the statement that commits the group.
    r#"
    CREATE TABLE tapes (
        id BIGSERIAL PRIMARY KEY,
        plugin TEXT NOT NULL,
        at BIGINT NOT NULL,
        route TEXT NOT NULL,
        work_order_id TEXT,
        version TEXT NOT NULL,
        outcome TEXT NOT NULL,
        tape BYTEA NOT NULL
    );
    CREATE INDEX tapes_plugin ON tapes (plugin, id);
    CREATE INDEX tapes_at ON tapes (at);
    "#,
    // 5: the candidate each plugin runs beside the version serving, on every host.
    r#"
    CREATE TABLE plugin_candidates (
        plugin TEXT PRIMARY KEY,
        hash TEXT NOT NULL,
        mode TEXT NOT NULL,
        percent INT NOT NULL,
        generation BIGINT NOT NULL,
        by_host TEXT NOT NULL,
        at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    "#,
];
/// The statements that bring a database to the newest schema, run in one transaction.
pub const PREPARE: &str = "
    CREATE TABLE IF NOT EXISTS followup_migrations (
        version INT PRIMARY KEY,
        applied TIMESTAMPTZ NOT NULL DEFAULT now()
    );
";

/// One lock for everyone applying migrations (any constant that other applications are
/// unlikely to use).
pub const LOCK: i64 = 0x666f_6c6c_6f77;
