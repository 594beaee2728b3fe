-- Register the Firehose landing bucket with Unity Catalog and check it can be listed.
-- Template values: location (external location name), bucket, credential (storage credential name,
-- created with the SDK/UI: there is no SQL for it), principal (user or group given read access, e.g.
-- account users).

CREATE EXTERNAL LOCATION IF NOT EXISTS `${location}`
  URL 's3://${bucket}/'
  WITH (STORAGE CREDENTIAL `${credential}`)
  COMMENT 'Firehose landing bucket of the kinesis lab';

-- Auto Loader and LIST need READ FILES; the pipeline only reads this bucket
GRANT READ FILES ON EXTERNAL LOCATION `${location}` TO `${principal}`;

DESCRIBE EXTERNAL LOCATION `${location}`;

-- Firehose writes under bronze/ingestion_date=yyyy/MM/dd/: this lists what has arrived
LIST 's3://${bucket}/bronze/' LIMIT 20;
