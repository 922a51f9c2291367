//! How the API is exposed ([`ApiOptions`]): a leaf of `api/` that the router, the OpenAPI
//! document and the command line read.

use std::time::Duration;

use super::guard::ApiToken;

/// How the API is exposed: who may use it and how much of it.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// `--auth-token-file` / `MONGOFERRY_API_TOKEN`: without it, no authentication.
    pub token: Option<ApiToken>,
    /// `--allowed-host`: names the service answers to, besides `localhost` and IP addresses.
    pub allowed_hosts: Vec<String>,
    /// Event streams open at once, for the whole service.
    pub max_event_streams: usize,
    /// How long a client may take to send a request (head or body).
    pub client_timeout: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            token: None,
            allowed_hosts: vec![],
            max_event_streams: 32,
            client_timeout: Duration::from_secs(10),
        }
    }
}
