-- Register the Firehose landing bucket with Unity Catalog and check it can be listed.
-- Template values: location (external location name), bucket, credential (storage credential name,
-- created with the SDK/UI: there is no SQL for it), principal (user or group given read access, e.g.
-- account users).
-- Read-only: the pipeline only reads this bucket, and the credential's IAM role may only get and list.
-- SQL cannot mark a location read-only: notebook 06 creates it first with the SDK
-- (uc.ensure_external_location, read_only=True), which makes the CREATE below a no-op. Created here
-- instead, tick "Limit to read-only use" on it in Catalog Explorer (or:
-- databricks external-locations update <name> --read-only). Grant no WRITE FILES on it.

CREATE EXTERNAL LOCATION IF NOT EXISTS `${location}`
  URL 's3://${bucket}/'
  WITH (STORAGE CREDENTIAL `${credential}`)
  COMMENT 'Firehose landing bucket of the kinesis lab';

-- Auto Loader and LIST need READ FILES; the pipeline only reads this bucket
GRANT READ FILES ON EXTERNAL LOCATION `${location}` TO `${principal}`;

-- read_only should be true
DESCRIBE EXTERNAL LOCATION `${location}`;

-- LIST shows only what is directly under the URL: here the ingestion_date=YYYY/ folders Firehose made
-- (bronze/ingestion_date=yyyy/MM/dd/<objects>). To see the objects of one day, list its folder, e.g.
--   LIST 's3://${bucket}/bronze/ingestion_date=2026/11/26/' LIMIT 20;
-- notebook 09 counts every landed line through this location with Spark.
LIST 's3://${bucket}/bronze/' LIMIT 20;
