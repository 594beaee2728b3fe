-- The lab's catalog and one schema per medallion layer (the original course made only `silver`).
-- Template values: catalog. Run as a user who may create catalogs on the metastore.

CREATE CATALOG IF NOT EXISTS `${catalog}`
  COMMENT 'Kinesis -> Firehose -> S3 -> Databricks course';

-- A metastore without a default storage root needs a managed location for the catalog instead:
--   CREATE CATALOG IF NOT EXISTS `${catalog}` MANAGED LOCATION 's3://<managed-bucket>/kinesis_lab/';
-- (an external location with write access must cover that path: not the landing bucket, whose
-- external location is read-only)

CREATE SCHEMA IF NOT EXISTS `${catalog}`.`bronze`
  COMMENT 'Raw events as Firehose delivered them, one row per line';

CREATE SCHEMA IF NOT EXISTS `${catalog}`.`silver`
  COMMENT 'Typed, checked, de-duplicated events and the quarantine of rejected ones';

CREATE SCHEMA IF NOT EXISTS `${catalog}`.`gold`
  COMMENT 'Aggregates for reporting';

SHOW SCHEMAS IN `${catalog}`;
