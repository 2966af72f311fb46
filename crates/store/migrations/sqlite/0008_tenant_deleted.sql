-- Deleting a tenant (DELETE /admin/v1/tenants/{id}): its keys are revoked and its data removed,
-- but its row stays, marked deleted, with its ledger and reservations, for accounting.
ALTER TABLE tenants ADD COLUMN deleted_at TEXT;

-- A deleted tenant's private repositories go with their revisions. Commits and trees stay
-- immutable otherwise: they may be deleted only with their repository, once it is marked as
-- being removed (inside the transaction that removes it).
ALTER TABLE hub_repos ADD COLUMN removing INTEGER NOT NULL DEFAULT 0 CHECK (removing IN (0, 1));

DROP TRIGGER hub_commits_undeletable;
CREATE TRIGGER hub_commits_undeletable BEFORE DELETE ON hub_commits
WHEN NOT EXISTS (SELECT 1 FROM hub_repos r WHERE r.id = OLD.repo_id AND r.removing = 1)
BEGIN SELECT RAISE(ABORT, 'hub commits are immutable'); END;

DROP TRIGGER hub_tree_undeletable;
CREATE TRIGGER hub_tree_undeletable BEFORE DELETE ON hub_tree_entries
WHEN NOT EXISTS (SELECT 1 FROM hub_repos r WHERE r.id = OLD.repo_id AND r.removing = 1)
BEGIN SELECT RAISE(ABORT, 'hub trees are immutable'); END;
