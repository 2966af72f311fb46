-- A succeeded fine-tuning job's adapter is committed to the hub (#22): a repository per
-- fine-tuned model of the tenant (`ORG/BASE-SUFFIX`), a revision per job, tagged with the
-- job's id. `hub_repo` is that repository's `ORG/NAME` once the commit went in.
ALTER TABLE fine_tuning_jobs ADD COLUMN hub_repo TEXT;
