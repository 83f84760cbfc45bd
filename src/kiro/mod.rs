//! The Kiro provider, in folders by concern, in the order a request meets them:
//!
//! | module | what it is |
//! |---|---|
//! | [`accounts`] | the accounts of the pool: built from the credential flags or the pool file, reloaded, probed; their model listings and credits |
//! | [`service`] | the leaf of the model tier: one account's upstream [`KiroService`] |
//! | [`auth`] | credentials and OAuth tokens: formats, refresh, rotation, the token store |
//! | [`protocol`] | the wire protocol: request builder, event-stream decoder, translation, errors |
//! | [`search`] | web search through Kiro's MCP endpoint: the call and its answer |
//! | [`transport`] | the HTTPS client and egress proxies |
//! | [`fake`] | the fake Kiro of mock mode and `aiproxy fake-kiro` |

pub mod accounts;
pub mod auth;
pub mod fake;
pub mod protocol;
pub mod search;
pub mod service;
pub mod transport;

pub use service::{KiroService, Transport};
