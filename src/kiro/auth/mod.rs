//! An account's credentials and OAuth tokens (docs/kiro-protocol.md §2-§3): the credential
//! formats, refresh and rotation, where tokens are kept (the token store, the atomic file
//! writes and the rotation lock).

pub mod account;
pub mod credentials;
pub mod file_lock;
pub mod persist;
pub mod profiles;
pub mod signin;
pub mod token_source;
pub mod token_store;
