//! Webhook verification building blocks: JWKS-checked JWTs and per-subscription derived secrets.
pub mod derive;
pub mod keys;
