//! The harness's side of the HTTP API: one keep-alive client, signed sandbox deliveries,
//! and the sandbox connect journey (`POST /connect/sandbox` → authorize page → callback).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use connectors::connector::signature::hmac_sha256_hex;
use connectors::crypto::Secret;
use connectors::domain::{format_time, now, TenantId};
use futures::stream::{self, StreamExt, TryStreamExt};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Client, Method, RequestBuilder, StatusCode, Url};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::server::ok_json;

/// The client, the operator token and the sandbox webhook secret of a run.
pub struct Api {
    client: Client,
    auth: HeaderValue,
    secret: Secret,
    /// Bytes of every delivery's body.
    payload_bytes: usize,
}

impl Api {
    /// One client (one connection pool, keep-alive, no redirects followed) for every task.
    pub fn new(
        token: &str,
        secret: &str,
        concurrency: usize,
        payload_bytes: usize,
    ) -> Result<Self> {
        let client = Client::builder()
            // Paced senders may each have several deliveries in flight.
            .pool_max_idle_per_host(concurrency.saturating_mul(4).saturating_add(8))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))?;
        auth.set_sensitive(true);
        Ok(Self {
            client,
            auth,
            secret: Secret::new(secret),
            payload_bytes,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A request with the operator token, for `tenant`.
    pub fn operator(&self, method: Method, url: Url, tenant: TenantId) -> RequestBuilder {
        self.client
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone())
            .header("x-tenant-id", tenant.to_string())
    }

    /// A sandbox event body of exactly `payload_bytes` bytes (when that is more than the
    /// fields need): `id`, `title`, `occurred_at` (now), `actor` and a `description` filler.
    pub fn body(&self, id: &str) -> Vec<u8> {
        let mut event = json!({
            "id": id,
            "title": format!("Benchmark event {id}"),
            "occurred_at": format_time(&now()),
            "actor": { "id": "bench", "name": "Bench Sender" },
            "description": "",
        });
        let bare = serde_json::to_vec(&event).unwrap_or_default().len();
        let filler = self.payload_bytes.saturating_sub(bare);
        event["description"] = Value::String("x".repeat(filler));
        serde_json::to_vec(&event).unwrap_or_default()
    }

    /// The `Authorization` header of every operator request.
    pub fn auth(&self) -> HeaderValue {
        self.auth.clone()
    }

    /// `POST /webhooks/sandbox/{tenant}` signed as the sandbox signs (`X-Sandbox-Signature:
    /// v1=<HMAC-SHA256 of "{timestamp}." + body>`); the stored event's id on `202`.
    pub async fn deliver(&self, base: &Url, tenant: TenantId, id: &str) -> Result<Uuid, String> {
        let bytes = self.delivery_answer(base, tenant, id).await?;
        let answer: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        answer["event_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| format!("202 without an event_id: {answer}"))
    }

    /// The body of the `202` answering one delivery, as [`Api::deliver`] sends it.
    pub async fn delivery_answer(
        &self,
        base: &Url,
        tenant: TenantId,
        id: &str,
    ) -> Result<axum::body::Bytes, String> {
        let body = self.body(id);
        let timestamp = now().timestamp().to_string();
        let signature = hmac_sha256_hex(&self.secret, &[timestamp.as_bytes(), b".", &body]);
        let url = base
            .join(&format!("webhooks/sandbox/{tenant}"))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .post(url)
            .header("x-sandbox-delivery", id)
            .header("x-sandbox-event", "event.created")
            .header("x-sandbox-timestamp", timestamp)
            .header("x-sandbox-signature", format!("v1={signature}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        if status != StatusCode::ACCEPTED {
            return Err(format!(
                "{status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ));
        }
        Ok(bytes)
    }

    /// The sandbox journey for `tenant`; returns the connection's id. The authorize link is
    /// followed hop by hop (the service's authorize hop, the sandbox's page, the callback) as a
    /// browser would, carrying the connect's binding cookie.
    pub async fn connect_sandbox(&self, base: &Url, tenant: TenantId) -> Result<String> {
        let response = self
            .operator(Method::POST, base.join("connect/sandbox")?, tenant)
            .send()
            .await?;
        let started: Value = ok_json(response, StatusCode::OK, "POST /connect/sandbox").await?;
        let mut next = started["authorize_url"]
            .as_str()
            .ok_or_else(|| anyhow!("no authorize_url in {started}"))?
            .to_string();
        let mut cookies: Vec<String> = Vec::new();
        for _ in 0..5 {
            let mut request = self.client.get(next.as_str());
            if !cookies.is_empty() {
                request = request.header("cookie", cookies.join("; "));
            }
            let response = request.send().await?;
            if response.status() != StatusCode::SEE_OTHER {
                let done: Value = ok_json(response, StatusCode::OK, "the sandbox callback").await?;
                return done["connection"]["id"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("no connection in {done}"));
            }
            cookies.extend(
                response
                    .headers()
                    .get_all("set-cookie")
                    .iter()
                    .filter_map(|c| c.to_str().ok()?.split(';').next().map(str::to_string)),
            );
            let location = response
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| anyhow!("a 303 of the connect journey has no Location"))?;
            next = Url::parse(location)
                .or_else(|_| base.join(location))?
                .to_string();
        }
        bail!("the connect journey did not end within five hops")
    }

    /// A sandbox connection for each of `tenants`, `concurrency` journeys at a time.
    pub async fn connect_all(
        &self,
        base: &Url,
        tenants: &[TenantId],
        concurrency: usize,
    ) -> Result<Vec<String>> {
        stream::iter(tenants.iter().copied())
            .map(|t| async move {
                self.connect_sandbox(base, t)
                    .await
                    .with_context(|| format!("connecting the sandbox for tenant {t}"))
            })
            .buffered(concurrency.max(1))
            .try_collect()
            .await
    }

    /// `POST /connections/{id}/sync`; returns the job's id.
    pub async fn sync_now(&self, base: &Url, tenant: TenantId, connection: &str) -> Result<String> {
        let url = base.join(&format!("connections/{connection}/sync"))?;
        let response = self.operator(Method::POST, url, tenant).send().await?;
        let job: Value = ok_json(
            response,
            StatusCode::ACCEPTED,
            "POST /connections/{id}/sync",
        )
        .await?;
        job["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no job id in {job}"))
    }

    /// `GET {path}` for `tenant`, expecting `200` and JSON.
    pub async fn get_json(&self, base: &Url, tenant: TenantId, path: &str) -> Result<Value> {
        let response = self
            .operator(Method::GET, base.join(path)?, tenant)
            .send()
            .await?;
        ok_json(response, StatusCode::OK, path).await
    }

    /// The server's `/metrics`, summing the counter `name` over the lines carrying `labels`.
    pub async fn counter(&self, base: &Url, name: &str, labels: &[&str]) -> Result<u64> {
        let text = self
            .client
            .get(base.join("metrics")?)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| {
                l.split(['{', ' ']).next() == Some(name)
                    && labels.iter().all(|label| l.contains(label))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum())
    }
}
