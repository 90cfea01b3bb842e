//! What Google Drive, Google Calendar and Gmail share: Google's OAuth 2.0 web server flow
//! ([`oauth`]), calling Google's REST APIs and reading their errors ([`api`]), and, for Drive
//! and Calendar, push notification channels: opening and stopping them ([`channel`]) and
//! receiving their notifications ([`push`]).

pub(super) mod api;
pub(super) mod channel;
mod oauth;
pub(super) mod push;

pub(super) use oauth::{endpoints, identify, revoke};
