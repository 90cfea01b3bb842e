//! Storing webhook deliveries by group commit (`store::shared::group`), once for both
//! databases: a delivery is durable before it is acknowledged, and the commit's durable write
//! is shared by the deliveries waiting at the time. Each store supplies the SQL.

use uuid::Uuid;

use super::group::Group;
use crate::domain::NewWebhookEvent;

/// What a caller learns: the stored event's id, and whether its delivery was a duplicate.
pub(crate) type Stored = (Uuid, bool);

/// The handle callers store deliveries through: stores a delivery unless its
/// `(tenant, provider, dedupe key)` is there, and answers once the commit holding it is done.
/// A group's outcomes are each delivery's own id and `false` when it was stored, the stored
/// event's id and `true` when it was a duplicate (of an event stored before or of another
/// delivery of the same group).
pub(crate) type Deliveries = Group<NewWebhookEvent, Stored>;
