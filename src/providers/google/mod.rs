//! What Google Drive, Google Calendar and Gmail share: Google's OAuth 2.0 web server flow
//! ([`oauth`]) and, for Drive and Calendar, push notification channels ([`push`]).

mod oauth;
pub(super) mod push;

pub(super) use oauth::{endpoints, identify, revoke};
