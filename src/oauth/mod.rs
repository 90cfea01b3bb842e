//! OAuth 2.0, provider-agnostic: minting single-use states and PKCE verifiers, building
//! authorize URLs, exchanging codes ([`flow`]), refreshing ([`refresh`]) and revoking
//! ([`revoke`]) tokens. Providers describe their endpoints and quirks through
//! [`crate::connector::Connector`]; nothing here names one.

mod error;
pub mod flow;
pub mod refresh;
pub mod revoke;

pub use error::FlowError;
