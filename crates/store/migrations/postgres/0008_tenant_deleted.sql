-- Deleting a tenant (DELETE /admin/v1/tenants/{id}): its keys are revoked and its data removed,
-- but its row stays, marked deleted, with its ledger and reservations, for accounting.
ALTER TABLE tenants ADD COLUMN deleted_at TIMESTAMPTZ;

-- A deleted tenant's private repositories go with their revisions. Commits and trees stay
-- immutable otherwise: they may be deleted only with their repository, once it is marked as
-- being removed (inside the transaction that removes it).
ALTER TABLE hub_repos ADD COLUMN removing BOOLEAN NOT NULL DEFAULT FALSE;

CREATE FUNCTION hub_refuse_delete() RETURNS trigger AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM hub_repos r WHERE r.id = OLD.repo_id AND r.removing) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER hub_commits_immutable ON hub_commits;
CREATE TRIGGER hub_commits_immutable BEFORE UPDATE ON hub_commits
    FOR EACH ROW EXECUTE FUNCTION hub_refuse_change();
CREATE TRIGGER hub_commits_undeletable BEFORE DELETE ON hub_commits
    FOR EACH ROW EXECUTE FUNCTION hub_refuse_delete();

DROP TRIGGER hub_tree_immutable ON hub_tree_entries;
CREATE TRIGGER hub_tree_immutable BEFORE UPDATE ON hub_tree_entries
    FOR EACH ROW EXECUTE FUNCTION hub_refuse_change();
CREATE TRIGGER hub_tree_undeletable BEFORE DELETE ON hub_tree_entries
    FOR EACH ROW EXECUTE FUNCTION hub_refuse_delete();
