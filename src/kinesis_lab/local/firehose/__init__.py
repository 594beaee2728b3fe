"""A local stand-in for Amazon Data Firehose delivering a Kinesis data stream to S3.

moto stores ``KinesisStreamAsSource`` delivery streams but never reads Kinesis. This package is a
small process (``python -m kinesis_lab.local.firehose --state-dir DIR``) that does what AWS documents:

Implemented
  * reads every shard of the source stream, starting at the delivery stream's creation (AWS starts at
    LATEST when the delivery stream is created: earlier records are not delivered);
  * buffers per BufferingHints (SizeInMBs / IntervalInSeconds, whichever first; 0 s = every poll);
  * concatenates record bytes as they are, or with "\\n" after each when an ``AppendDelimiterToRecord``
    processor is configured; ``GZIP`` compression (``.gz`` keys);
  * S3 keys: evaluated Prefix (``!{timestamp:...}`` at the oldest record's arrival, UTC;
    ``!{firehose:random-string}``; default ``yyyy/MM/dd/HH/`` appended when there is no timestamp
    expression) + ``<name>-<version>-YYYY-MM-DD-HH-MM-SS-<uuid>`` (see ``expressions``);
  * writes as the delivery stream's role (sts:AssumeRole), so IAM applies when moto enforces it;
  * what it cannot process goes under ErrorOutputPrefix (``!{firehose:error-output-type}``) as AWS's
    error JSON documents, never dropped; failed S3 writes are retried with backoff, blocking that
    delivery stream meanwhile;
  * per-shard checkpoints in ``DIR/checkpoints.json`` advanced only after the object is written: a
    restart (SIGTERM, or even SIGKILL) neither loses nor repeats records. Exactly once, except a
    crash between the S3 write and the checkpoint write: those records are delivered again
    (at-least-once, as AWS documents for Firehose too). SIGTERM delivers what is buffered first.

Not implemented (their records go to the error prefix, or the delivery stream is not delivered and
the log says why): Lambda and other processors, record format conversion, dynamic partitioning
(``partitionKeyFrom...``), compression other than GZIP, CustomTimeZone, S3 backup, encryption
settings, CloudWatch Logs/metrics, DirectPut delivery streams (moto's put_record_batch handles those),
KPL de-aggregation, and destinations other than S3.
"""
