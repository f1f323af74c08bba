-- Dataset versions belong to one tenant: each tenant's audio makes its own versions,
-- numbered per (tenant, name), and a tenant sees only its own. Versions frozen before
-- this migration were made from every tenant's audio; they are given to 'default'.

ALTER TABLE dataset_versions ADD COLUMN tenant text NOT NULL DEFAULT 'default';
-- From now on every writer names the tenant: no silent default.
ALTER TABLE dataset_versions ALTER COLUMN tenant DROP DEFAULT;

ALTER TABLE dataset_versions DROP CONSTRAINT dataset_versions_name_version_key;
ALTER TABLE dataset_versions
    ADD CONSTRAINT dataset_versions_tenant_name_version_key UNIQUE (tenant, name, version);

-- Two versions never share their files in object storage.
CREATE UNIQUE INDEX dataset_versions_prefix ON dataset_versions (prefix);
