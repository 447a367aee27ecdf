"""Keep the admin app's Firestore read model in step with PostgreSQL, incrementally by content.

A run walks live customers in keyset batches, builds their documents in SQL
(crm_pipeline.firestore.documents), and writes only those whose content hash differs from the one
recorded in `firestore_mirror_state`. Customers soft-deleted, merged or redacted lose their
document and subcollections. State and `customer_sync_logs` rows are committed per batch, so a
crashed first sync resumes cheaply: already-mirrored customers hash equal and are skipped.

Writes go through Firestore's non-atomic BatchWrite RPC (500 writes per request, several requests
in parallel), which reports a status per write, so one bad document never fails its neighbours.
Failed customers are retried with backoff inside the run, then left `status='failed'` with a
`next_attempt_at` for a later run.

One concern per module: `settings` (knobs, run summary), `encoding` (wire protobufs), `writer`
(BatchWrite, retries), `bookkeeping` (state and log rows), `sync` (the incremental run),
`deletes` (documents of customers no longer live), `repair`, `dashboard`. This package re-exports
the names the rest of the code imports.
"""

from crm_pipeline.firestore.mirror.bookkeeping import _Bookkeeping as _Bookkeeping
from crm_pipeline.firestore.mirror.dashboard import DashboardSummary as DashboardSummary
from crm_pipeline.firestore.mirror.dashboard import sync_dashboard as sync_dashboard
from crm_pipeline.firestore.mirror.deletes import list_subdocuments as list_subdocuments
from crm_pipeline.firestore.mirror.encoding import encode_fields as encode_fields
from crm_pipeline.firestore.mirror.encoding import encode_value as encode_value
from crm_pipeline.firestore.mirror.encoding import write_protobuf as write_protobuf
from crm_pipeline.firestore.mirror.repair import repair_mirror as repair_mirror
from crm_pipeline.firestore.mirror.settings import MirrorSettings as MirrorSettings
from crm_pipeline.firestore.mirror.settings import MirrorSummary as MirrorSummary
from crm_pipeline.firestore.mirror.sync import sync_mirror as sync_mirror
from crm_pipeline.firestore.mirror.writer import MAX_BATCH_WRITES as MAX_BATCH_WRITES
from crm_pipeline.firestore.mirror.writer import CustomerWrite as CustomerWrite
from crm_pipeline.firestore.mirror.writer import FailWrite as FailWrite
from crm_pipeline.firestore.mirror.writer import FirestoreWrite as FirestoreWrite
from crm_pipeline.firestore.mirror.writer import FirestoreWriter as FirestoreWriter
from crm_pipeline.firestore.mirror.writer import Operation as Operation
from crm_pipeline.firestore.mirror.writer import WriteOutcome as WriteOutcome
from crm_pipeline.firestore.mirror.writer import customer_delete as customer_delete
from crm_pipeline.firestore.mirror.writer import customer_upsert as customer_upsert
from crm_pipeline.firestore.verify import ConsistencyReport as ConsistencyReport
from crm_pipeline.firestore.verify import check_mirror_consistency as check_mirror_consistency
from crm_pipeline.firestore.verify import diff_sorted_ids as diff_sorted_ids
