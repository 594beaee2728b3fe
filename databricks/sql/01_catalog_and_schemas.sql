-- The lab's catalog and one schema per medallion layer: the pipeline publishes bronze.bronze_events,
-- silver.silver_events, silver.silver_quarantine and gold.gold_* (the original course made only `silver`).
-- Template values: catalog; managed_location (optional: None leaves its line out).
-- Run once per catalog the bundle deploys to: kinesis_lab (target dev), kinesis_lab_prod (target prod).
-- Run as a user who may create catalogs on the metastore.
--
-- managed_location: where the catalog's managed tables are stored. Leave it out when the metastore has a
-- storage root. A metastore without one (workspaces enabled for Unity Catalog automatically) refuses
-- CREATE CATALOG without it: give an s3:// path covered by an external location with write access -
-- not the landing bucket, whose external location is read-only - e.g. s3://<another-bucket>/kinesis_lab/.

CREATE CATALOG IF NOT EXISTS `${catalog}`
  MANAGED LOCATION '${managed_location}'
  COMMENT 'Kinesis -> Firehose -> S3 -> Databricks course';

CREATE SCHEMA IF NOT EXISTS `${catalog}`.`bronze`
  COMMENT 'Raw events as Firehose delivered them, one row per line';

CREATE SCHEMA IF NOT EXISTS `${catalog}`.`silver`
  COMMENT 'Typed, checked, de-duplicated events and the quarantine of rejected ones';

CREATE SCHEMA IF NOT EXISTS `${catalog}`.`gold`
  COMMENT 'Aggregates for reporting';

SHOW SCHEMAS IN `${catalog}`;
