"""Point-in-time recovery for PostgreSQL: the backup machine streams a host's WAL
with pg_receivewal and stores each segment age-encrypted beside a signed record,
so a restore can replay a base backup's WAL up to a chosen moment. `wal` is the
pure part (WAL names and arithmetic, the storage layout, the records, chain
checks and the choice of segments for a restore); the streaming, the uploads and
the restore's staging build on it.
"""
