//! Builds the whole service from a [`Config`]: store, state, router and listeners. `main` and
//! the tests start exactly the same thing (tests on port 0).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Config;
use crate::http::edge::{self, EdgeSettings};
use crate::http::serve::{serve, ServeSettings};
use crate::http::{ApiError, AppState, ErrorCode};
use crate::services::{supervise, Services};
use crate::store::{self, Store, StoreOptions};
use crate::telemetry;

/// A built, bound, not yet running service.
pub struct App {
    state: AppState,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
}

impl App {
    /// Connects to and migrates the configured database, then binds the listeners.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = open_store(&config).await?;
        store
            .migrate()
            .await
            .context("applying database migrations")?;
        Self::with_store(config, store).await
    }

    /// Binds the listeners for `config` over an already migrated `store`.
    pub async fn with_store(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.bind_addr)
            .await
            .with_context(|| format!("binding {}", config.bind_addr))?;
        let metrics_listener = match config.metrics_bind_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding metrics address {addr}"))?,
            ),
            None => None,
        };
        let mut config = config;
        // A base URL derived from port 0 names the port the listener actually got.
        if config.public_base_url.port() == Some(0) {
            let port = listener.local_addr()?.port();
            let _ = config.public_base_url.set_port(Some(port));
        }
        let services = Services::new(Arc::new(config), store);
        let state = AppState::new(services, telemetry::metrics());
        Ok(Self {
            state,
            listener,
            metrics_listener,
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The address metrics are served on, when separate.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The application state (tests reach the store through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests
    /// finish and closes the database pool.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        let services = state.services.clone();
        let upkeep = tokio::spawn(telemetry::metrics_upkeep(state.metrics.clone()));
        let mut background = Vec::new();
        if services.config.roles.worker {
            // Supervised: a panic on one bad item must not stop the loop for every tenant.
            let s = services.clone();
            background.push(supervise(&services, "token_refresh", move || {
                crate::tokens::run(s.clone())
            }));
            let s = services.clone();
            background.push(supervise(&services, "inbox", move || {
                crate::ingest::inbox::run(s.clone())
            }));
            let s = services.clone();
            background.push(supervise(&services, "wake_ups", move || {
                crate::ingest::relay_wake_ups(s.clone())
            }));
            let s = services.clone();
            background.push(supervise(&services, "push", move || {
                crate::push::run(s.clone())
            }));
            let s = services.clone();
            background.push(supervise(&services, "retention", move || {
                crate::ingest::retention::run(s.clone())
            }));
        }
        if services.config.roles.api {
            let s = services.clone();
            background.push(supervise(&services, "live_signals", move || {
                crate::push::live::run(s.clone())
            }));
        }
        let sync = crate::ingest::sync::spawn(&services);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopping = services.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopping.begin_shutdown();
            let _ = stop_tx.send(true);
        });
        let connections = ServeSettings {
            header_read_timeout: services.config.header_read_timeout,
            idle_timeout: services.config.idle_timeout,
            max_connections: services.config.max_connections,
        };
        let metrics_server = self.metrics_listener.map(|listener| {
            let router = metrics_router(state.clone());
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                serve(listener, router, connections, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
            })
        });
        tracing::info!(addr = %self.listener.local_addr()?, backend = state.store.backend().as_str(), "listening");
        let mut stop = stop_rx;
        serve(
            self.listener,
            router(state.clone()),
            connections,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )
        .await;
        if let Some(server) = metrics_server {
            server.await.context("metrics server task")?;
        }
        upkeep.abort();
        for task in background {
            task.abort();
        }
        sync.stop().await;
        state.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Opens the configured store (not migrated).
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let options = StoreOptions {
        max_connections: config.db_max_connections,
    };
    store::connect(&config.database_url, &options)
        .await
        .context("connecting to the database")
}

/// The full router over `state`: documented routes, Swagger UI and the edge middleware.
pub fn router(state: AppState) -> Router {
    let settings = EdgeSettings {
        request_timeout: state.config.request_timeout,
        max_body_bytes: state.config.max_body_bytes,
    };
    if !state.config.roles.api {
        // A worker-only instance answers probes and metrics, nothing else.
        let (operations, _) = utoipa_axum::router::OpenApiRouter::new()
            .merge(crate::api::operations_routes())
            .split_for_parts();
        return edge::apply(operations, settings).with_state(state);
    }
    let (api, _) = crate::openapi::router();
    let docs: Router<AppState> = SwaggerUi::new("/docs")
        .config(utoipa_swagger_ui::Config::from("/openapi.json"))
        .into();
    // Pages a provider serves itself (the sandbox's authorize page); not part of the API.
    let providers = state
        .registry
        .entries()
        .iter()
        .flat_map(|e| e.connector.pages())
        .fold(Router::new(), |router, page| {
            router.route(page.path, get(crate::http::pages::serve(*page)))
        });
    let floor = state
        .config
        .bench_floor_bytes
        .map_or_else(Router::new, crate::api::bench_floor);
    let router = api
        .merge(docs)
        .merge(providers)
        .merge(floor)
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no route matches this path") });
    edge::apply(router, settings).with_state(state)
}

fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(state): axum::extract::State<AppState>| async move {
                    crate::api::render_metrics(&state).await
                },
            ),
        )
        .layer(axum::middleware::map_response(
            |response: axum::response::Response| async move { edge::nosniff(response) },
        ))
        .with_state(state)
}
