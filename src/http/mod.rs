//! The HTTP layer: state, edge middleware, error model, caller authentication, query parsing
//! and cursors. Resource handlers live in [`crate::api`].

pub mod auth;
pub mod body;
pub mod cursor;
pub mod edge;
pub mod error;
pub mod pages;
pub mod path;
pub mod query;
pub mod serve;
pub mod state;
pub mod trace;

pub use auth::{Operator, Tenant, TenantHeader};
pub use error::{ApiError, ErrorCode, Problem};
pub use path::IdPath;
pub use state::AppState;
