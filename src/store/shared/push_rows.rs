//! Reading push rows back, for both databases: [`push_rows!`] expands the decoders of
//! endpoint, delivery and event rows for one sqlx row type, inside the
//! [`push_store!`](super::push::push_store) expansion.

/// Expands `mod push_rows` with decoders for rows of type `$row`.
macro_rules! push_rows {
    ($row:ty) => {
        mod push_rows {
            use sqlx::Row;
            use uuid::Uuid;

            use $crate::domain::{
                from_micros, Delivery, DeliveryFailure, DeliveryId, Endpoint, EndpointFilter,
                EndpointId, EventId, PushEvent, TenantId, Timestamp,
            };
            use $crate::store::StoreError;

            pub(super) fn time(column: &'static str, micros: i64) -> Result<Timestamp, StoreError> {
                from_micros(micros)
                    .ok_or_else(|| StoreError::corrupt(column, "timestamp out of range"))
            }

            pub(super) fn opt_time(
                column: &'static str,
                micros: Option<i64>,
            ) -> Result<Option<Timestamp>, StoreError> {
                micros.map(|m| time(column, m)).transpose()
            }

            fn list<T: std::str::FromStr>(
                column: &'static str,
                text: Option<String>,
            ) -> Result<Option<Vec<T>>, StoreError> {
                let Some(text) = text else { return Ok(None) };
                let items: Vec<String> =
                    serde_json::from_str(&text).map_err(|e| StoreError::corrupt(column, e))?;
                items
                    .iter()
                    .map(|i| {
                        i.parse()
                            .map_err(|_| StoreError::corrupt(column, "unknown value"))
                    })
                    .collect::<Result<Vec<T>, _>>()
                    .map(Some)
            }

            fn code(column: &'static str, value: Option<i64>) -> Result<Option<u16>, StoreError> {
                value
                    .map(|v| u16::try_from(v).map_err(|e| StoreError::corrupt(column, e)))
                    .transpose()
            }

            fn parsed<T: std::str::FromStr>(
                column: &'static str,
                text: String,
            ) -> Result<T, StoreError> {
                text.parse()
                    .map_err(|_| StoreError::corrupt(column, "unknown value"))
            }

            pub(super) fn endpoint(row: &$row) -> Result<Endpoint, StoreError> {
                let failure_at = opt_time("last_failure_at", row.try_get("last_failure_at")?)?;
                Ok(Endpoint {
                    id: EndpointId(row.try_get::<Uuid, _>("id")?),
                    tenant_id: TenantId(row.try_get::<Uuid, _>("tenant_id")?),
                    url: row.try_get("url")?,
                    description: row.try_get("description")?,
                    filter: EndpointFilter {
                        event_types: list("event_types", row.try_get("event_types")?)?,
                        providers: list("providers", row.try_get("providers")?)?,
                        kinds: list("kinds", row.try_get("kinds")?)?,
                    },
                    include_payload: row.try_get("include_payload")?,
                    status: parsed("status", row.try_get("status")?)?,
                    disabled_reason: row.try_get("disabled_reason")?,
                    failing_since: opt_time("failing_since", row.try_get("failing_since")?)?,
                    last_success_at: opt_time("last_success_at", row.try_get("last_success_at")?)?,
                    last_failure: match failure_at {
                        Some(at) => Some(DeliveryFailure {
                            at,
                            status_code: code(
                                "last_failure_status",
                                row.try_get("last_failure_status")?,
                            )?,
                            error: row.try_get("last_failure_error")?,
                        }),
                        None => None,
                    },
                    created_at: time("created_at", row.try_get("created_at")?)?,
                    updated_at: time("updated_at", row.try_get("updated_at")?)?,
                })
            }

            pub(super) fn delivery(row: &$row) -> Result<Delivery, StoreError> {
                let status: $crate::domain::DeliveryStatus =
                    parsed("status", row.try_get("status")?)?;
                let attempts: i64 = row.try_get("attempts")?;
                let latency: Option<i64> = row.try_get("last_latency_ms")?;
                Ok(Delivery {
                    id: DeliveryId(row.try_get::<Uuid, _>("id")?),
                    endpoint_id: EndpointId(row.try_get::<Uuid, _>("endpoint_id")?),
                    event_id: EventId(row.try_get::<Uuid, _>("event_id")?),
                    event_type: parsed("event_type", row.try_get("event_type")?)?,
                    tenant_id: TenantId(row.try_get::<Uuid, _>("tenant_id")?),
                    connection_id: $crate::domain::ConnectionId(
                        row.try_get::<Uuid, _>("connection_id")?,
                    ),
                    seq: row.try_get("seq")?,
                    status,
                    attempts: u32::try_from(attempts)
                        .map_err(|e| StoreError::corrupt("attempts", e))?,
                    next_attempt_at: match status {
                        $crate::domain::DeliveryStatus::Pending => {
                            Some(time("next_attempt_at", row.try_get("next_attempt_at")?)?)
                        }
                        _ => None,
                    },
                    last_status_code: code("last_status_code", row.try_get("last_status_code")?)?,
                    last_error: row.try_get("last_error")?,
                    last_latency_ms: latency.map(|l| u64::try_from(l).unwrap_or(0)),
                    last_response_body: row.try_get("last_response_body")?,
                    created_at: time("created_at", row.try_get("created_at")?)?,
                    updated_at: time("updated_at", row.try_get("updated_at")?)?,
                    completed_at: opt_time("completed_at", row.try_get("completed_at")?)?,
                })
            }

            pub(super) fn event(row: &$row) -> Result<PushEvent, StoreError> {
                let data: String = row.try_get("data")?;
                Ok(PushEvent {
                    id: EventId(row.try_get::<Uuid, _>("id")?),
                    seq: row.try_get("seq")?,
                    tenant_id: TenantId(row.try_get::<Uuid, _>("tenant_id")?),
                    connection_id: $crate::domain::ConnectionId(
                        row.try_get::<Uuid, _>("connection_id")?,
                    ),
                    provider: row.try_get("provider")?,
                    kind: row.try_get("kind")?,
                    event_type: parsed("event_type", row.try_get("event_type")?)?,
                    data: serde_json::from_str(&data)
                        .map_err(|e| StoreError::corrupt("data", e))?,
                    created_at: time("created_at", row.try_get("created_at")?)?,
                })
            }

            /// A list filter as stored: a JSON array of strings, or NULL for "all".
            pub(super) fn encode_list<T: std::fmt::Display>(
                items: &Option<Vec<T>>,
            ) -> Option<String> {
                items.as_ref().map(|items| {
                    let texts: Vec<String> = items.iter().map(ToString::to_string).collect();
                    serde_json::Value::from(texts).to_string()
                })
            }
        }
    };
}

pub(crate) use push_rows;
