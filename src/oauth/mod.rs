//! The OAuth 2.0 connect journey, provider-agnostic: minting single-use states and PKCE
//! verifiers, building authorize URLs, exchanging codes and storing the connection ([`flow`]).
//! Tokens are refreshed and revoked by [`crate::tokens`]. Providers describe their endpoints
//! and quirks through [`crate::connector::Connector`]; nothing here names one.

pub mod binding;
mod error;
pub mod flow;

pub use error::FlowError;
